"""Pure ingest code (no Django; import-linter holds it to that): `imaging` validates and
re-encodes image bytes, `readers` parse dataset layouts (Flickr8k, COCO, CSV, folders), `demo`
lists the demo collection shipped inside installed packages."""
