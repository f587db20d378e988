"""Importing a catalogue and shopper interactions from files: validate everything first, then write once.

A user hands us a CSV, Parquet or JSONL file. We read it (refusing unknown formats and text that is
not UTF-8), rename columns through an optional mapping (``{"title": "name"}`` means our ``title``
comes from the file's ``name`` column), check every row with vectorised pandas rules, and only when
the whole file is clean write it in ONE store transaction. A file with any problem imports nothing; the
:class:`~storage.errors.ValidationError` lists each problem with the row it is on (``line N`` for CSV
and JSONL, counting the header as line 1; ``row N`` for Parquet) and what is wrong.

The same frame-level functions serve the UCI Online Retail adapter (:func:`import_online_retail`) and
the demo shop, so every path into the catalogue passes the same rules.

Canonical columns
- catalogue: ``item_id``, ``title`` (required); ``description``, ``category``, ``price``,
  ``attributes`` (a JSON object). Other columns become ``attributes`` when the file has no
  ``attributes`` column; otherwise they are ignored (and reported).
- interactions: ``shopper_id``, ``item_id``, ``ts`` (required; ``timestamp`` is accepted as a name too),
  ``event`` (default ``purchase``), ``quantity`` (default 1). Timestamps with a time zone are converted
  to UTC and stored without one; everything else is stored as written. A row repeating another's
  shopper, item, event and time, and a time more than a day after the import, are problems.

A ".csv" file whose header has no comma but one of ``;``, tab or ``|`` is read with that delimiter. Mapping
hints are phrased by a :class:`MappingWording` (the CLI's ``--map`` by default; the app names its box).

The package's modules, one step each: :mod:`~rlhf.importing.files` (read a file, map its columns),
:mod:`~rlhf.importing.validate` (every rule, every problem with its row), :mod:`~rlhf.importing.write`
(one transaction, the catalogue and interactions imports) and :mod:`~rlhf.importing.online_retail` (the
UCI adapter). Everything public is importable from here.
"""

from __future__ import annotations

from rlhf.importing.files import (
    CLI_WORDING,
    FORMATS,
    FileRejectedError,
    MappingWording,
    RawTable,
    apply_mapping,
    parse_mapping,
    read_table,
)
from rlhf.importing.online_retail import (
    ONLINE_RETAIL_CATEGORIES,
    ONLINE_RETAIL_NON_PRODUCT_CODES,
    ONLINE_RETAIL_NON_PRODUCT_PREFIXES,
    OnlineRetailReport,
    import_online_retail,
    online_retail_category,
    online_retail_frames,
    online_retail_non_product,
    online_retail_note,
)
from rlhf.importing.validate import (
    CATALOG_OPTIONAL,
    CATALOG_REQUIRED,
    INTERACTION_ALIASES,
    INTERACTION_OPTIONAL,
    INTERACTION_REQUIRED,
    validate_catalog,
    validate_interactions,
)
from rlhf.importing.write import (
    ImportReport,
    StageCallback,
    import_catalog,
    import_interactions,
    write_dataset,
)

__all__ = [
    "CATALOG_OPTIONAL",
    "CATALOG_REQUIRED",
    "CLI_WORDING",
    "FORMATS",
    "INTERACTION_ALIASES",
    "INTERACTION_OPTIONAL",
    "INTERACTION_REQUIRED",
    "ONLINE_RETAIL_CATEGORIES",
    "ONLINE_RETAIL_NON_PRODUCT_CODES",
    "ONLINE_RETAIL_NON_PRODUCT_PREFIXES",
    "FileRejectedError",
    "ImportReport",
    "MappingWording",
    "OnlineRetailReport",
    "RawTable",
    "StageCallback",
    "apply_mapping",
    "import_catalog",
    "import_interactions",
    "import_online_retail",
    "online_retail_category",
    "online_retail_frames",
    "online_retail_non_product",
    "online_retail_note",
    "parse_mapping",
    "read_table",
    "validate_catalog",
    "validate_interactions",
    "write_dataset",
]
