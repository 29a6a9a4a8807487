"""Building the infinite index ahead of time: every query's first pages rendered into the store.

`build` plans, renders and writes pages in-process, through the service's own page path
(`service.records` turns rendered images into the store's items, PNG bytes with metadata
and row fields, for both). `noise2art.cluster` runs the same pages on Ray.
"""
