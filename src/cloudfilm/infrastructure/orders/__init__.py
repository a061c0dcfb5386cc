"""Readers of a hospital's order feed (HL7 v2 ORM^O01/OMG^O19, FHIR R4 ServiceRequest) into
:class:`~cloudfilm.infrastructure.orders.order.Order`, and the HL7 answer carrying the
recognition prompt. Pure: no database, no service."""
