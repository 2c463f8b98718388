"""Job logic: backup, estimate, restore and listing, composed from aws, formats and a sink."""
