"""The `asfd` command line: a thin layer over the library (library code never imports it)."""
