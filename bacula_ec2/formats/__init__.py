"""Pure codecs for what lands in the catalog: block images, block maps and JSON configs.

Nothing here does I/O policy: writers return bytes, readers consume bytes.
"""
