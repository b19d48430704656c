"""Query functions: one module per aggregate. They build and run SQL on a
:class:`server.db.engine.Conn` and return rows; they know nothing of protobuf."""
