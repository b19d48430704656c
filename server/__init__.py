"""The booking data service: a grpc.aio server that owns the booking database.

Public surface: :func:`server.app.create_server`, :class:`server.config.Settings`.
"""
