"""The UCI Online Retail adapter: its quirks turned into a catalogue and interactions the common rules accept."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rlhf.errors import ImportFileError
from rlhf.importing.validate import _rows_as_json, validate_catalog, validate_interactions
from rlhf.importing.write import StageCallback, _stage, write_dataset
from rlhf.settings import Settings, get_settings
from storage import Store

log = logging.getLogger(__name__)

#: Stock codes that are postage, fees, manual adjustments, samples or vouchers, not products (SOURCE.md).
ONLINE_RETAIL_NON_PRODUCT_CODES = frozenset(
    {"POST", "DOT", "M", "m", "D", "C2", "S", "B", "BANK CHARGES", "AMAZONFEE", "CRUK", "PADS"}
)
ONLINE_RETAIL_NON_PRODUCT_PREFIXES = ("DCGS", "gift_0001_")

#: Coarse categories from title keywords, first match wins; titles matching none are "other".
#: This is a heuristic over the product titles (the data set has no categories), stated as such.
ONLINE_RETAIL_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("christmas", r"CHRISTMAS|XMAS|ADVENT|SANTA|REINDEER|SNOWFLAKE|SNOWMAN|BAUBLE|NATIVITY"),
    ("easter", r"EASTER|\bCHICKS?\b|\bBUNNY\b"),
    (
        "jewellery",
        r"NECKLACE|BRACELET|EARRINGS|\bCHARM\b|\bBEADS?\b|DIAMANTE|BROOCH|PENDANT|\bHAIR|\bRING\b(?! OF)",
    ),
    (
        "candles & lighting",
        r"CANDLE|T-LIGHT|T LIGHT|TEALIGHT|LANTERN|\bLIGHTS?\b|\bLAMP|INCENSE|NIGHT ?LIGHT",
    ),
    (
        "party & gift wrap",
        r"\bPARTY\b|BALLOON|BIRTHDAY|\bWRAP\b|GIFT BAG|GIFT TAPE|\bRIBBONS?\b|TISSUE|BUNTING|CONFETTI",
    ),
    (
        "stationery & cards",
        (
            r"\bCARDS?\b|NOTEBOOK|\bPENS?\b|PENCIL|STICKER|\bTAPE\b|ENVELOPE|JOURNAL|ERASER|CRAYON|"
            r"CALENDAR|\bPAPER\b|NOTEPAD|BOOKMARK|\bBOOK\b|STATIONERY|\bCHALK\b"
        ),
    ),
    (
        "kitchen & dining",
        (
            r"\bMUGS?\b|\bCUPS?\b|\bBOWLS?\b|\bPLATES?\b|\bTEA\b|COFFEE|\bCAKE\b|CUTLERY|\bTRAY\b|\bJAR\b|"
            r"KITCHEN|LUNCH|\bDISH\b|TEAPOT|SPOON|APRON|NAPKIN|BAKING|RECIPE|PANTRY|CHOPSTICK|"
            r"\bJUG\b|BEAKER|\bGLASS(?:ES)?\b|TUMBLER|PICNIC|BISCUIT|JAM|CHOPPING|OVEN|DINNER|\bTINS?\b|"
            r"BOTTLE|\bFORK\b|KNIFE|TEA TOWEL|EGG CUP|COASTER|PLACEMAT|STRAW|CASES|PLATTER|BREAD"
        ),
    ),
    (
        "bags & accessories",
        (
            r"\bBAGS?\b|PURSE|HANDBAG|UMBRELLA|PARASOL|WALLET|SHOPPER|\bCASE\b|SCARF|GLOVES|"
            r"\bHAT\b|KEY RING|KEYRING|MIRROR COMPACT|BACKPACK|LUGGAGE"
        ),
    ),
    (
        "toys & games",
        (
            r"\bTOYS?\b|JIGSAW|\bGAMES?\b|DOLL|CHILDRENS|CHILDS|\bKIDS?\b|\bBALL\b|PLAYHOUSE|PUPPET|TEDDY|"
            r"SKITTLES|DOMINO|SPACEBOY|CIRCUS|SOLDIER|POP.?UP|COLOURING|CRAYONS|PAINTING SET|MAGIC"
        ),
    ),
    (
        "garden & outdoor",
        (
            r"GARDEN|\bPLANT|WATERING|BIRD|TRUG|\bPOTS?\b|PLANTER|HERB|SEED|GNOME|OUTDOOR|"
            r"\bFEEDER\b|\bHEN\b|\bDOVE\b"
        ),
    ),
    (
        "bath & body",
        (
            r"\bBATH|SOAP|TOILETRY|COSMETIC|MAKE UP|HOT WATER BOTTLE|SPONGE|WASHBAG|TOWEL|LIP GLOSS|"
            r"NAIL|PERFUME|BALM"
        ),
    ),
    (
        "home decor",
        (
            r"\bSIGN\b|FRAME|MIRROR|CLOCK|CUSHION|DOORMAT|\bHOOKS?\b|DECORATION|GARLAND|WREATH|DRAWER|\bKNOB\b|"
            r"CABINET|\bTILE\b|ORNAMENT|VASE|HANGER|STORAGE|\bBOX(?:ES)?\b|BASKET|SHELF|\bDOOR\b|"
            r"WALL ART|PICTURE|PHOTO|\bHEART\b|\bSTAND\b|\bRACK\b|PLAQUE|\bBELL\b|THROW|QUILT|"
            r"BLANKET|CHANDELIER|\bHOLDER\b|MAGNET|DOORSTOP|COAT|CURTAIN|\bRUG\b|TRINKET|BUNTING|FLAG|"
            r"ART FLOWER|ARTIFICIAL FLOWER|\bBIN\b|BUCKET|LETTERS|\bFAN\b|MOBILE|MEMOBOARD"
        ),
    ),
)


@dataclass(frozen=True)
class OnlineRetailReport:
    """What the UCI Online Retail adapter kept and why it dropped the rest."""

    items: int
    interactions: int
    shoppers: int
    rows_read: int
    dropped: dict[str, int]
    products_dropped: dict[str, int]
    category_counts: dict[str, int]
    seconds: float

    def summary(self) -> str:
        dropped = ", ".join(f"{k}: {v:,}" for k, v in self.dropped.items())
        return (
            f"Imported {self.items:,} products, {self.interactions:,} purchases and {self.shoppers:,} shoppers "
            f"from {self.rows_read:,} invoice lines in {self.seconds:.1f} s (dropped {dropped})."
        )


def online_retail_non_product(codes: pd.Series) -> pd.Series:
    """True where a StockCode is postage, a fee, an adjustment, a sample or a voucher."""
    codes = codes.astype("string").fillna("")
    mask = codes.isin(ONLINE_RETAIL_NON_PRODUCT_CODES)
    for prefix in ONLINE_RETAIL_NON_PRODUCT_PREFIXES:
        mask |= codes.str.startswith(prefix)
    return mask.astype(bool)


def online_retail_note(descriptions: pd.Series) -> pd.Series:
    """True where a Description is a warehouse note rather than a product title.

    Product titles in this data set are written in capitals ("WHITE HANGING HEART T-LIGHT HOLDER");
    the notes are not ("?", "damaged", "check", "Found", "wrongly marked 23343", "Manual",
    "Next Day Carriage"). Rule: empty, or no more capital letters than small ones. A few real products
    written in mixed case ("*Boombox Ipod Classic") are dropped by it too; none has a customer.
    """
    codes, uniques = pd.factorize(descriptions.astype("string").fillna(""), sort=False)
    d = pd.Series(uniques, dtype="string").str.strip()  # each distinct text once: ~4k, not 400k
    upper = d.str.count(r"[A-Z]").fillna(0)
    lower = d.str.count(r"[a-z]").fillna(0)
    is_note = ((d == "") | (upper <= lower)).to_numpy(dtype=bool)
    return pd.Series(is_note[codes], index=descriptions.index)


def online_retail_category(titles: pd.Series) -> pd.Series:
    """A coarse category for each title from ONLINE_RETAIL_CATEGORIES (first matching keyword rule)."""
    upper = titles.astype("string").fillna("").str.upper()
    out = pd.Series("other", index=titles.index, dtype=object)
    unassigned = pd.Series(True, index=titles.index)
    for name, pattern in ONLINE_RETAIL_CATEGORIES:
        hit = unassigned & upper.str.contains(pattern, regex=True).fillna(False).astype(bool)
        out[hit] = name
        unassigned &= ~hit
    return out


def products_from_lines(lines: pd.DataFrame) -> pd.DataFrame:
    """One row per stock code, as ``products.parquet`` has it, from the invoice lines alone: so that the data
    set as UCI publishes it (saved as Parquet) imports without the derived file.

    ``Description``: the code's most frequent description (the first seen of those tied); the price, line,
    customer and quantity figures over its sales lines (quantity and price above 0, not a cancellation).
    """
    described = lines.loc[lines["Description"].notna(), ["StockCode", "Description"]].reset_index(drop=True)
    counts = (described.assign(_first=described.index)
              .groupby(["StockCode", "Description"], sort=False)
              .agg(n=("_first", "size"), first=("_first", "min")).reset_index()
              .sort_values(["StockCode", "n", "first"], ascending=[True, False, True])
              .drop_duplicates("StockCode").set_index("StockCode")["Description"])
    sales = lines[(lines["Quantity"] > 0) & (lines["UnitPrice"] > 0)
                  & ~lines["InvoiceNo"].astype("string").str.startswith("C")].groupby("StockCode")
    codes = pd.Series(sorted(lines["StockCode"].dropna().unique()), name="StockCode")
    return pd.DataFrame({
        "StockCode": codes,
        "Description": codes.map(counts).to_numpy(),
        "n_distinct_descriptions": codes.map(described.groupby("StockCode")["Description"].nunique()).fillna(0)
        .astype("int64").to_numpy(),
        "median_unit_price": codes.map(sales["UnitPrice"].median()).to_numpy(),
        "n_invoice_lines": codes.map(sales.size()).fillna(0).astype("int64").to_numpy(),
        "n_customers": codes.map(sales["CustomerID"].nunique()).fillna(0).astype("int64").to_numpy(),
        "total_quantity": codes.map(sales["Quantity"].sum()).fillna(0).astype("int64").to_numpy(),
    })


def online_retail_frames(
    path_dir: str | Path,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Read the UCI Online Retail Parquet files and apply the cleaning rules (no store involved).

    Returns (items, interactions, shoppers, stats). Invoice lines are dropped, counted under the first
    rule that applies, in this order: no CustomerID; cancellation (InvoiceNo starts with "C"); non-product
    stock code; Quantity <= 0 (returns); UnitPrice <= 0; warehouse-note Description; product not in the
    cleaned catalogue. Products are dropped when non-product, with a note or no Description, or without a
    positive median price. Items: title = Description, price = median_unit_price, category =
    :func:`online_retail_category`. Interactions: event "purchase", ts = InvoiceDate, quantity.
    """
    folder = Path(path_dir)
    lines_path, products_path = folder / "online_retail.parquet", folder / "products.parquet"
    if not lines_path.is_file():
        raise ImportFileError(
            f"{lines_path} not found: the UCI Online Retail folder must hold online_retail.parquet (the data set's "
            "eight columns, saved as Parquet) and may hold products.parquet."
        )
    lines = pd.read_parquet(lines_path)
    need = {
        "InvoiceNo",
        "StockCode",
        "Description",
        "Quantity",
        "InvoiceDate",
        "UnitPrice",
        "CustomerID",
        "Country",
    }
    missing = need - set(lines.columns)
    if missing:
        raise ImportFileError(
            f"{lines_path.name} lacks the columns {', '.join(sorted(missing))}; is it the UCI file?"
        )
    products = pd.read_parquet(products_path) if products_path.is_file() else products_from_lines(lines)

    p_codes = products["StockCode"].astype("string")
    p_rules = {
        "non-product code": online_retail_non_product(p_codes),
        "note or no description": online_retail_note(products["Description"]),
        "no positive price": ~(products["median_unit_price"].fillna(0) > 0),
    }
    keep_p = pd.Series(True, index=products.index)
    products_dropped: dict[str, int] = {}
    for name, mask in p_rules.items():
        hit = keep_p & mask
        products_dropped[name] = int(hit.sum())
        keep_p &= ~mask
    kept = products[keep_p]
    titles = kept["Description"].astype("string").str.strip().str.replace(r"\s+", " ", regex=True)
    items = pd.DataFrame(
        {
            "item_id": kept["StockCode"].astype(str).to_numpy(),
            "title": titles.astype(object).to_numpy(),
            "description": None,
            "category": online_retail_category(titles).to_numpy(),
            "price": kept["median_unit_price"].astype(float).round(2).to_numpy(),
        }
    )
    items["attributes"] = _rows_as_json(
        kept[["n_customers", "total_quantity", "n_distinct_descriptions"]].reset_index(drop=True)
    )

    rules = {
        "no CustomerID": lines["CustomerID"].isna().to_numpy(),
        "cancellation": lines["InvoiceNo"]
        .astype("string")
        .str.startswith("C")
        .fillna(False)
        .to_numpy(dtype=bool),
        "non-product code": online_retail_non_product(lines["StockCode"]).to_numpy(),
        "return (quantity <= 0)": (lines["Quantity"] <= 0).to_numpy(),
        "price <= 0": (lines["UnitPrice"] <= 0).to_numpy(),
        "warehouse note": online_retail_note(lines["Description"]).to_numpy(),
        "product not in catalogue": ~lines["StockCode"].isin(items["item_id"]).to_numpy(),
    }
    keep = np.ones(len(lines), dtype=bool)
    dropped: dict[str, int] = {}
    for name, mask in rules.items():
        dropped[name] = int((keep & mask).sum())
        keep &= ~mask
    sel = lines[keep]
    interactions = pd.DataFrame(
        {
            "shopper_id": sel["CustomerID"].astype("int64").astype(str).to_numpy(),
            "item_id": sel["StockCode"].astype(str).to_numpy(),
            "event": "purchase",
            "ts": sel["InvoiceDate"].astype("datetime64[us]").to_numpy(),
            "quantity": sel["Quantity"].astype("int64").to_numpy(),
        }
    )
    country = (
        pd.DataFrame(
            {"shopper_id": interactions["shopper_id"], "country": sel["Country"].astype(str).to_numpy()}
        )
        .groupby(["shopper_id", "country"])
        .size()
        .reset_index(name="n")
        .sort_values(["shopper_id", "n", "country"], ascending=[True, False, True])
        .drop_duplicates("shopper_id")
    )
    shoppers = pd.DataFrame(
        {"shopper_id": country["shopper_id"].to_numpy(), "segment": country["country"].to_numpy()}
    )
    shoppers["attributes"] = _rows_as_json(country[["country"]].reset_index(drop=True))
    stats = {"rows_read": len(lines), "dropped": dropped, "products_dropped": products_dropped}
    return items, interactions, shoppers, stats


def import_online_retail(
    store: Store,
    path_dir: str | Path,
    *,
    settings: Settings | None = None,
    on_stage: StageCallback | None = None,
) -> OnlineRetailReport:
    """Import the UCI Online Retail data set (products, purchases, shoppers) in one transaction.

    Cleaning rules: :func:`online_retail_frames`. The cleaned frames then pass the same validation as
    any file import, so a second run is refused (the items already exist) and nothing is half-written.
    """
    settings = settings or get_settings()
    started = time.perf_counter()
    _stage(on_stage, "read")
    items, interactions, shoppers, stats = online_retail_frames(path_dir)
    _stage(on_stage, "validate")
    clean_items = validate_catalog(items, limits=settings.imports, what="UCI Online Retail products")
    clean_inter = validate_interactions(
        interactions,
        known_items=pd.Index(clean_items["item_id"]),
        limits=settings.imports,
        what="UCI Online Retail invoice lines",
        allow_repeats=True,  # an invoice may list one product on two lines in the same minute
    )
    _stage(on_stage, "write")
    n_items, n_inter, n_shoppers = write_dataset(
        store,
        items=clean_items,
        interactions=clean_inter,
        shoppers=shoppers,
        source="uci_online_retail",
        limits=settings.imports,
    )
    report = OnlineRetailReport(
        items=n_items,
        interactions=n_inter,
        shoppers=n_shoppers,
        rows_read=stats["rows_read"],
        dropped=stats["dropped"],
        products_dropped=stats["products_dropped"],
        category_counts=clean_items["category"].value_counts().to_dict(),
        seconds=time.perf_counter() - started,
    )
    log.info(report.summary())
    return report
