"""Delivery: the send loop, its rate limits and retries, the report."""
