"""Rows from a RUM query: the time range (`dates`), the query actually sent (`spec`) and
the paging search that turns events into rows (`source`)."""
