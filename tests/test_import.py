"""Importing catalogues and interactions: validation first, one transaction, errors that name the rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from rlhf.errors import ImportFileError
from rlhf.importing import (
    FileRejectedError,
    import_catalog,
    import_interactions,
    import_online_retail,
    online_retail_frames,
    parse_mapping,
)
from storage import ValidationError
from storage import catalog as catalog_repo
from storage.records import CatalogItem, Shopper

FIXTURES = Path(__file__).parent / "fixtures"


def _snapshot(store) -> dict[str, pd.DataFrame]:
    with store.transaction() as con:
        return {
            "items": catalog_repo.items_frame(con),
            "shoppers": catalog_repo.shoppers_frame(con),
            "interactions": catalog_repo.interactions_frame(con),
        }


def _assert_unchanged(store, before: dict[str, pd.DataFrame]) -> None:
    after = _snapshot(store)
    for name, frame in before.items():
        pd.testing.assert_frame_equal(frame, after[name], check_dtype=False)


def _problems(excinfo) -> str:
    return "\n".join(excinfo.value.problems)


# --- store round trips -------------------------------------------------------------------------------


def test_items_and_shoppers_round_trip_through_the_store(store) -> None:
    items = [
        CatalogItem("X1", "Ceramic Mug", "A mug.", "Kitchen", 9.5, {"colour": "blue", "sizes": [1, 2]}),
        CatalogItem("X2", "Tea Towel"),
    ]
    shoppers = [Shopper("s1", "regular", {"country": "UK"}, {"budget": 30.0}), Shopper("s2")]
    with store.transaction() as con:
        catalog_repo.insert_items(con, items)
        catalog_repo.upsert_shoppers(con, shoppers)
    with store.transaction() as con:
        assert catalog_repo.all_items(con) == items
        assert catalog_repo.get_items(con, ["X2", "nope"]) == {"X2": items[1]}
        assert catalog_repo.all_shoppers(con) == shoppers
        assert catalog_repo.get_shopper(con, "s1") == shoppers[0]


# --- good files --------------------------------------------------------------------------------------


def test_csv_catalogue_and_interactions_import(store, settings) -> None:
    report = import_catalog(store, FIXTURES / "catalog_good.csv", settings=settings)
    assert report.rows_written == 4
    with store.transaction() as con:
        items = {i.item_id: i for i in catalog_repo.all_items(con)}
    assert items["A1"].price == 24.5 and items["A1"].category == "Coffee & Tea"
    assert items["A2"].description == "End-grain oak board.\nTwo lines of description."
    assert items["A3"].price is None and items["A3"].description is None
    assert items["A4"].attributes == {"colour": "brass"}  # unknown columns become attributes

    report = import_interactions(store, FIXTURES / "interactions_good.csv", settings=settings)
    assert (report.rows_written, report.shoppers_added) == (5, 2)
    with store.transaction() as con:
        frame = catalog_repo.interactions_frame(con)
    assert list(frame["event"]) == ["view", "purchase", "purchase", "purchase", "purchase"]
    assert list(frame["quantity"]) == [1, 1, 2, 1, 1]  # an empty quantity means 1
    assert str(frame["ts"].iloc[2]) == "2024-03-02 09:00:00"


def test_column_mapping_renames_file_columns(store, settings) -> None:
    mapping = parse_mapping(["item_id=sku", "title=name"])
    assert mapping == {"item_id": "sku", "title": "name"}
    import_catalog(store, FIXTURES / "catalog_mapped.csv", mapping=mapping, settings=settings)
    with store.transaction() as con:
        assert [i.title for i in catalog_repo.all_items(con)] == [
            "Rattan Storage Basket",
            "Glass Water Carafe",
        ]


def test_a_mapping_naming_an_absent_column_is_refused(store, settings) -> None:
    with pytest.raises(ValidationError) as excinfo:
        import_catalog(store, FIXTURES / "catalog_mapped.csv", mapping={"title": "label"}, settings=settings)
    assert "no column 'label'" in _problems(excinfo)
    with pytest.raises(ImportFileError, match="OUR_COLUMN=FILE_COLUMN"):
        parse_mapping(["title"])


def test_jsonl_and_parquet_catalogues(store, settings, tmp_path: Path) -> None:
    import_catalog(store, FIXTURES / "catalog_good.jsonl", settings=settings)
    frame = pd.DataFrame(
        {"item_id": ["P1", "P2"], "title": ["Jute Rug", "Glass Vase"], "price": [120.0, None]}
    )
    path = tmp_path / "items.parquet"
    frame.to_parquet(path)
    import_catalog(store, path, settings=settings)
    with store.transaction() as con:
        items = {i.item_id: i for i in catalog_repo.all_items(con)}
    assert items["J1"].attributes == {"material": "wool"}
    assert items["J2"].price == 18.5
    assert items["P1"].price == 120.0 and items["P2"].price is None


# --- every problem, named by row ---------------------------------------------------------------------


def test_bad_catalogue_rows_are_all_named_and_nothing_is_imported(store, settings) -> None:
    before = _snapshot(store)
    with pytest.raises(ValidationError) as excinfo:
        import_catalog(store, FIXTURES / "catalog_bad.csv", settings=settings)
    text = _problems(excinfo)
    assert "line 3: empty title" in text
    assert "line 4: price 'abc' is not a number" in text
    assert "line 5: price -3 is negative" in text
    assert "line 6: duplicate item id 'B1' (appears at line 2, line 6)" in text
    assert "line 2: duplicate item id 'B1'" in text
    assert "line 7: price 2,000,000 is above the limit 1,000,000" in text
    assert "line 8: empty item id" in text
    assert "nothing was imported" in str(excinfo.value)
    _assert_unchanged(store, before)


def test_missing_column_is_named(store, settings, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("id,name\n1,Mug\n")
    with pytest.raises(ValidationError) as excinfo:
        import_catalog(store, path, settings=settings)
    text = _problems(excinfo)
    assert "missing column 'item_id'" in text and "missing column 'title'" in text
    assert "it has: id, name" in text and "--map item_id=" in text


def test_text_over_the_size_limits_is_named(store, tmp_path: Path) -> None:
    from rlhf.settings import load_settings

    settings = load_settings(
        store={"data_dir": tmp_path}, imports={"max_title_chars": 10, "max_description_chars": 20}
    )
    path = tmp_path / "c.csv"
    path.write_text(
        "item_id,title,description\nT1,Short,ok\nT2,A title far too long,ok\nT3,Fine," + "x" * 21 + "\n"
    )
    with pytest.raises(ValidationError) as excinfo:
        import_catalog(store, path, settings=settings)
    text = _problems(excinfo)
    assert "line 3: title is 20 characters (limit 10)" in text
    assert "line 4: description is 21 characters (limit 20)" in text


def test_item_ids_already_in_the_catalogue_are_refused(store, settings) -> None:
    import_catalog(store, FIXTURES / "catalog_good.csv", settings=settings)
    before = _snapshot(store)
    with pytest.raises(ValidationError) as excinfo:
        import_catalog(store, FIXTURES / "catalog_good.csv", settings=settings)
    text = _problems(excinfo)
    assert "line 2: item id 'A1' is already in the catalogue" in text
    assert "line 3: item id 'A2' is already in the catalogue" in text
    assert str(excinfo.value).startswith("catalog_good.csv has 4 problems in 4 rows")  # names the file
    _assert_unchanged(store, before)


def test_bad_encoding_names_the_byte_offset_and_line(store, settings) -> None:
    with pytest.raises(FileRejectedError) as excinfo:
        import_catalog(store, FIXTURES / "catalog_latin1.csv", settings=settings)
    message = str(excinfo.value)
    assert "catalog_latin1.csv is not UTF-8" in message
    assert "byte 0xe9 at byte offset 26 (line 2)" in message
    assert isinstance(excinfo.value, ValidationError) and isinstance(excinfo.value, ImportFileError)


def test_unknown_extension_and_malformed_files_are_refused(store, settings, tmp_path: Path) -> None:
    xlsx = tmp_path / "items.xlsx"
    xlsx.write_bytes(b"PK\x03\x04")
    with pytest.raises(FileRejectedError, match=r"unknown file type '\.xlsx'; use one of .*\.csv"):
        import_catalog(store, xlsx, settings=settings)
    with pytest.raises(FileRejectedError, match=r"line 2 is not valid JSON"):
        import_catalog(store, FIXTURES / "catalog_bad.jsonl", settings=settings)
    broken = tmp_path / "x.parquet"
    broken.write_text("not parquet")
    with pytest.raises(FileRejectedError, match="not a readable Parquet file"):
        import_catalog(store, broken, settings=settings)
    with pytest.raises(FileRejectedError, match="does not exist"):
        import_catalog(store, tmp_path / "missing.csv", settings=settings)


def test_bad_interaction_rows_are_named_and_nothing_is_imported(store, settings) -> None:
    import_catalog(store, FIXTURES / "catalog_good.csv", settings=settings)
    before = _snapshot(store)
    with pytest.raises(ValidationError) as excinfo:
        import_interactions(store, FIXTURES / "interactions_bad.csv", settings=settings)
    text = _problems(excinfo)
    assert "line 3: item 'NOPE' is not in the catalogue" in text
    assert "line 4: timestamp 'not a date' is not a date and time" in text
    assert "line 5: event 'like' is not one of view, click, cart, purchase" in text
    assert "line 6: quantity 0 is below 1" in text
    assert "line 7: quantity 'two' is not a whole number" in text
    assert "line 8: empty shopper id" in text
    assert "line 2" not in text  # the good row is not blamed
    _assert_unchanged(store, before)


def test_reimporting_the_same_interactions_is_refused(store, settings) -> None:
    import_catalog(store, FIXTURES / "catalog_good.csv", settings=settings)
    import_interactions(store, FIXTURES / "interactions_good.csv", settings=settings)
    before = _snapshot(store)
    with pytest.raises(ValidationError) as excinfo:
        import_interactions(store, FIXTURES / "interactions_good.csv", settings=settings)
    assert "line 2: this interaction is already stored" in _problems(excinfo)
    assert str(excinfo.value).startswith("interactions_good.csv has 5 problems in 5 rows")  # names the file
    _assert_unchanged(store, before)


def test_the_same_interaction_twice_in_one_file_is_refused_naming_its_lines(
    store, settings, tmp_path: Path
) -> None:
    """A row repeated within one file would be written twice; the store only catches it on a second import."""
    import_catalog(store, FIXTURES / "catalog_good.csv", settings=settings)
    before = _snapshot(store)
    path = tmp_path / "twice.csv"
    path.write_text(
        "shopper_id,item_id,ts,event,quantity\n"
        "u1,A1,2024-03-01 10:00:00,purchase,1\n"
        "u1,A1,2024-03-01 10:00:00,view,1\n"  # another event: a different interaction
        "u1,A1,2024-03-01T10:00:00,purchase,2\n"  # the same moment written otherwise, another quantity
    )
    with pytest.raises(ValidationError) as excinfo:
        import_interactions(store, path, settings=settings)
    text = _problems(excinfo)
    same = (
        "this interaction appears more than once in the file "
        "(same shopper, item, event and time at line 2, line 4)"
    )
    assert f"line 2: {same}" in text and f"line 4: {same}" in text
    assert "line 3" not in text
    assert str(excinfo.value).startswith("twice.csv has 2 problems in 2 rows; nothing was imported")
    _assert_unchanged(store, before)


def test_timestamps_in_the_future_are_refused_with_a_day_of_slack(store, settings, tmp_path: Path) -> None:
    from datetime import datetime, timezone

    from rlhf.importing import validate_interactions

    frame = pd.DataFrame(
        {
            "shopper_id": ["u1", "u1", "u1"],
            "item_id": ["A1", "A2", "A3"],
            "ts": ["2024-05-02 11:00", "2024-05-02 13:00", "2024-05-02T13:00:00+02:00"],
        }
    )
    now = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    with pytest.raises(ValidationError) as excinfo:
        validate_interactions(frame, known_items=None, limits=settings.imports, now=now)
    assert excinfo.value.problems == [
        (
            "row 2: timestamp '2024-05-02 13:00' is in the future "
            "(the import runs at 2024-05-01 12:00 UTC; a day of slack is allowed for time zones)"
        )
    ]  # 23 hours ahead passes; 11:00 UTC (13:00+02:00) too

    import_catalog(store, FIXTURES / "catalog_good.csv", settings=settings)
    path = tmp_path / "future.csv"
    path.write_text("shopper_id,item_id,ts\nu1,A1,2024-03-01 10:00\nu1,A2,2099-01-01 00:00\n")
    with pytest.raises(ValidationError) as excinfo:
        import_interactions(store, path, settings=settings)
    assert _problems(excinfo).startswith("line 3: timestamp '2099-01-01 00:00' is in the future")


def test_a_file_with_a_header_but_no_rows_is_refused(store, settings, tmp_path: Path) -> None:
    before = _snapshot(store)
    path = tmp_path / "items.csv"
    path.write_text("item_id,title\n")
    with pytest.raises(FileRejectedError, match=r"^items\.csv has a header but no rows"):
        import_catalog(store, path, settings=settings)
    blank = tmp_path / "clicks.csv"
    blank.write_text("shopper_id,item_id,ts\n\n,,\n")
    with pytest.raises(FileRejectedError, match=r"^clicks\.csv has a header but no rows"):
        import_interactions(store, blank, settings=settings)
    parquet = tmp_path / "items.parquet"
    pd.DataFrame({"item_id": pd.Series([], dtype=str), "title": pd.Series([], dtype=str)}).to_parquet(parquet)
    with pytest.raises(FileRejectedError, match=r"^items\.parquet has columns but no rows"):
        import_catalog(store, parquet, settings=settings)
    _assert_unchanged(store, before)


def test_mapping_hints_follow_the_front_end_and_errors_never_show_the_folder(
    store, settings, tmp_path: Path
) -> None:
    """The app has a mapping box, not --map; it saves uploads in a temporary folder the user never saw."""
    from rlhf.importing import MappingWording

    box = MappingWording(entry="Column mapping {pair}", remedy="map one in the box, e.g. {column}=YOURS")
    path = tmp_path / "c.csv"
    path.write_text("id,name\n1,Mug\n")
    with pytest.raises(ValidationError) as excinfo:
        import_catalog(store, path, settings=settings, wording=box)
    text = _problems(excinfo)
    assert "(it has: id, name); map one in the box, e.g. item_id=YOURS" in text and "--map" not in text
    with pytest.raises(ValidationError) as excinfo:
        import_interactions(store, path, settings=settings, wording=box, mapping={"ts": "when"})
    text = _problems(excinfo)
    assert "Column mapping ts=when: the file has no column 'when'" in text and "--map" not in text
    with pytest.raises(ImportFileError, match=r"^Column mapping 'title' should look like OUR_COLUMN="):
        parse_mapping(["title"], wording=box)
    with pytest.raises(ImportFileError, match=r"^--map 'title' should look like"):  # the CLI keeps its words
        parse_mapping(["title"])

    broken = tmp_path / "fake.parquet"
    broken.write_text("not parquet")
    with pytest.raises(FileRejectedError) as excinfo:
        import_catalog(store, broken, settings=settings)
    assert str(excinfo.value).startswith("fake.parquet is not a readable Parquet file")
    assert str(tmp_path) not in str(excinfo.value)


def test_semicolon_tab_and_pipe_separated_csv_files_import(store, settings, tmp_path: Path) -> None:
    """Spreadsheets in many locales save "CSV" with semicolons; a header without commas tells us so."""
    for n, sep in enumerate((";", "\t", "|")):
        path = tmp_path / f"items{n}.csv"
        rows = (["item_id", "title", "price"], [f"S{n}", "Mug, blue", "3.5"])
        path.write_text("".join(sep.join(row) + "\n" for row in rows))
        assert import_catalog(store, path, settings=settings).rows_written == 1
    with store.transaction() as con:
        items = {i.item_id: i for i in catalog_repo.all_items(con)}
    assert [(items[f"S{n}"].title, items[f"S{n}"].price) for n in range(3)] == [("Mug, blue", 3.5)] * 3
    euro = tmp_path / "euro.csv"  # such files write decimal commas; "1,000" could be a thousand: refused
    euro.write_text("item_id;title;price\nE1;Teapot;3,50\nE2;Kettle;1,000\n")
    with pytest.raises(ValidationError) as excinfo:
        import_catalog(store, euro, settings=settings)
    assert _problems(excinfo) == "line 3: price '1,000' is not a number"
    euro.write_text("item_id;title;price\nE1;Teapot;3,50\nE2;Kettle;12,5\n")
    import_catalog(store, euro, settings=settings)
    with store.transaction() as con:
        assert [i.price for i in catalog_repo.get_items(con, ["E1", "E2"]).values()] == [3.5, 12.5]
    mixed = tmp_path / "mixed.csv"  # a comma in the header: commas it is, whatever else it holds
    mixed.write_text("item_id,title;price\nM1,Bowl\n")
    with pytest.raises(ValidationError, match="missing column 'title'"):
        import_catalog(store, mixed, settings=settings)


def test_timestamps_with_zones_become_utc_and_numbers_are_refused(store, settings, tmp_path: Path) -> None:
    import_catalog(store, FIXTURES / "catalog_good.csv", settings=settings)
    path = tmp_path / "i.jsonl"
    path.write_text(
        json.dumps({"shopper_id": "z", "item_id": "A1", "ts": "2024-05-01T12:00:00+02:00"})
        + "\n"
        + json.dumps({"shopper_id": "z", "item_id": "A2", "ts": 1714557600})
        + "\n"
    )
    with pytest.raises(ValidationError) as excinfo:
        import_interactions(store, path, settings=settings)
    assert "line 2: timestamp '1714557600' is not a date and time" in _problems(excinfo)
    path.write_text(
        json.dumps({"shopper_id": "z", "item_id": "A1", "ts": "2024-05-01T12:00:00+02:00"}) + "\n"
    )
    import_interactions(store, path, settings=settings)
    with store.transaction() as con:
        assert str(catalog_repo.interactions_frame(con)["ts"].iloc[0]) == "2024-05-01 10:00:00"


def test_problem_lists_are_capped_but_counted(store, tmp_path: Path) -> None:
    from rlhf.settings import load_settings

    settings = load_settings(store={"data_dir": tmp_path}, imports={"max_problems": 5})
    path = tmp_path / "c.csv"
    path.write_text("item_id,title\n" + "".join(f"I{n},\n" for n in range(40)))
    with pytest.raises(ValidationError) as excinfo:
        import_catalog(store, path, settings=settings)
    assert len(excinfo.value.problems) == 6
    assert excinfo.value.problems[-1] == "... and 35 more problems"


def test_a_large_file_imports_quickly_enough_to_be_usable(store, settings, tmp_path: Path) -> None:
    """100k rows go through validation and one transaction (figures in benchmarks, not asserted here)."""
    n = 100_000
    frame = pd.DataFrame(
        {
            "item_id": [f"I{k}" for k in range(n)],
            "title": [f"Item number {k}" for k in range(n)],
            "price": [str(k % 300) for k in range(n)],
        }
    )
    path = tmp_path / "big.csv"
    frame.to_csv(path, index=False)
    assert import_catalog(store, path, settings=settings).rows_written == n
    with store.transaction() as con:
        assert catalog_repo.count_items(con) == n


# --- UCI Online Retail -------------------------------------------------------------------------------

NON_PRODUCT = {"POST", "DOT", "M", "m", "D", "C2", "S", "B", "BANK CHARGES", "AMAZONFEE", "CRUK", "PADS"}


def _independent_uci_counts(folder: Path) -> tuple[int, int, int]:
    """The cleaning rules re-derived with plain pandas, written independently of rlhf.importing."""
    lines = pd.read_parquet(folder / "online_retail.parquet")
    products = pd.read_parquet(folder / "products.parquet")

    def non_product(codes: pd.Series) -> pd.Series:
        c = codes.astype(str)
        return c.isin(NON_PRODUCT) | c.str.startswith("DCGS") | c.str.startswith("gift_0001_")

    def note(desc: pd.Series) -> pd.Series:
        d = desc.fillna("").astype(str).str.strip()
        return (d == "") | (d.str.count("[A-Z]") <= d.str.count("[a-z]"))

    good_products = products[
        ~non_product(products.StockCode) & ~note(products.Description) & (products.median_unit_price > 0)
    ]
    keep = (
        lines.CustomerID.notna()
        & ~lines.InvoiceNo.astype(str).str.startswith("C")
        & ~non_product(lines.StockCode)
        & (lines.Quantity > 0)
        & (lines.UnitPrice > 0)
        & ~note(lines.Description)
        & lines.StockCode.isin(good_products.StockCode)
    )
    kept = lines[keep]
    return len(good_products), int(keep.sum()), kept.CustomerID.nunique()


def test_online_retail_adapter_on_the_real_data(store, settings, shared_data: Path) -> None:
    folder = shared_data / "uci_online_retail"
    items, interactions, purchases_shoppers = _independent_uci_counts(folder)
    report = import_online_retail(store, folder, settings=settings)
    assert (report.items, report.interactions, report.shoppers) == (items, interactions, purchases_shoppers)
    # Pinned figures for this copy of the data (a change here is a regression or a changed rule).
    assert (report.items, report.interactions, report.shoppers) == (3839, 314_748, 3970)
    assert report.rows_read == 431_673
    assert report.dropped == {
        "no CustomerID": 108_103,
        "cancellation": 7_495,
        "non-product code": 1_259,
        "return (quantity <= 0)": 0,
        "price <= 0": 22,
        "warehouse note": 45,
        "product not in catalogue": 1,
    }
    assert sum(report.dropped.values()) + report.interactions == report.rows_read
    with store.transaction() as con:
        counts = catalog_repo.data_counts(con)
        sample = catalog_repo.get_items(con, ["85123A", "POST"])
        frame = catalog_repo.interactions_frame(con)
    assert (
        counts["catalog_items"] == 3839 and counts["interactions"] == 314_748 and counts["shoppers"] == 3970
    )
    assert "POST" not in sample and sample["85123A"].title == "WHITE HANGING HEART T-LIGHT HOLDER"
    assert sample["85123A"].category == "candles & lighting" and sample["85123A"].price > 0
    assert (frame["quantity"] > 0).all() and set(frame["event"]) == {"purchase"}
    assert frame["ts"].max() < pd.Timestamp("2011-11-01")
    # A second run is refused as a whole, not half-applied.
    with pytest.raises(ValidationError, match="nothing was imported"):
        import_online_retail(store, folder, settings=settings)
    with store.transaction() as con:
        assert catalog_repo.data_counts(con) == counts


def test_online_retail_adapter_needs_the_invoice_lines(tmp_path: Path, shared_data: Path) -> None:
    shutil.copy(shared_data / "uci_online_retail" / "products.parquet", tmp_path / "products.parquet")
    with pytest.raises(ImportFileError, match="online_retail.parquet not found"):
        online_retail_frames(tmp_path)


def test_the_invoice_lines_alone_import_as_with_the_derived_products_file(tmp_path: Path, shared_data: Path) -> None:
    """The data set as UCI publishes it has no products.parquet; what the adapter derives in its place must be
    that file's titles and prices (SOURCE.md: most frequent description, median price over sales)."""
    from rlhf.importing.online_retail import products_from_lines

    folder = shared_data / "uci_online_retail"
    lines = pd.read_parquet(folder / "online_retail.parquet")
    shipped = pd.read_parquet(folder / "products.parquet").set_index("StockCode").sort_index()
    derived = products_from_lines(lines).set_index("StockCode").sort_index()
    assert list(derived.index) == list(shipped.index)
    pd.testing.assert_frame_equal(derived.astype(object), shipped[derived.columns].astype(object))
    shutil.copy(folder / "online_retail.parquet", tmp_path / "online_retail.parquet")
    alone, with_file = online_retail_frames(tmp_path), online_retail_frames(folder)
    for a, b in zip(alone[:3], with_file[:3], strict=True):
        pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


def test_a_huge_price_is_named_in_a_readable_number(store, settings, tmp_path) -> None:
    """1e308 was printed with its 309 digits."""
    path = tmp_path / "huge.csv"
    path.write_text("item_id,title,price\nH1,Gold Mug,1e308\n", encoding="utf-8")
    with pytest.raises(ValidationError) as excinfo:
        import_catalog(store, path, settings=settings)
    assert "line 2: price 1e+308 is above the limit 1,000,000" in _problems(excinfo)


def _import_tiny_catalog(store, settings, tmp_path) -> None:
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\nI1,Oak Spoon\nI2,Linen Apron\n", encoding="utf-8")
    import_catalog(store, items, settings=settings)


@pytest.mark.parametrize(("dates", "stored", "refused"), [
    # a day above 12 in one row says the file writes the day first: 03/04 is 3 April
    (["03/04/2025 10:00", "25/04/2025 11:00"], ["2025-04-03 10:00", "2025-04-25 11:00"], None),
    # a second number above 12 says the month comes first: 03/04 is 4 March
    (["03/04/2025 10:00", "04/25/2025 11:00"], ["2025-03-04 10:00", "2025-04-25 11:00"], None),
    # nothing says: refused, not guessed (05/05 would be the same either way)
    (["03/04/2025 10:00", "05/05/2025 11:00"], None, ("line 2: timestamp '03/04/2025 10:00' does not say whether "
                                                   "the day or the month comes first")),
    (["25/04/2025 10:00", "04/25/2025 11:00"], None, "is one of dates the file writes both day first and month first"),
])
def test_day_and_month_are_read_in_the_order_the_file_shows(store, settings, tmp_path, dates, stored, refused):
    """pandas read 03/04/2025 as 4 March without a word, even in a file whose other dates put the day first."""
    _import_tiny_catalog(store, settings, tmp_path)
    path = tmp_path / "when.csv"
    path.write_text("shopper_id,item_id,ts\n" + "".join(f"S1,I{k % 2 + 1},{d}\n" for k, d in enumerate(dates)),
                    encoding="utf-8")
    if refused:
        with pytest.raises(ValidationError) as excinfo:
            import_interactions(store, path, settings=settings)
        assert refused in _problems(excinfo)
        return
    import_interactions(store, path, settings=settings)
    with store.transaction() as con:
        got = [str(r[0])[:16] for r in con.execute("SELECT ts FROM interactions ORDER BY ts").fetchall()]
    assert got == stored
