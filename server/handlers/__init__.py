"""One module per proto service: decode the request, call query functions,
encode the response. No SQL here."""
