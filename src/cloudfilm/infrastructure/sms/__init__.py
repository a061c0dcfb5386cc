"""Adapters that send text messages to an SMS provider."""
