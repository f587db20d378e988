"""The synthetic demo shop: a deterministic catalogue, shoppers with hidden preferences, and their history.

``recfeedback init --demo`` builds it so that a new user has something real-looking to label at once,
and so that simulations have a GROUND TRUTH: every shopper carries ``hidden_preferences`` (stored in
``shoppers.hidden_preferences``, never shown to the policy) and :func:`item_utility` /
:func:`list_utility` say how much that shopper would value an item or a ranked list. The shoppers'
views and purchases are sampled from the same utility, so their history is evidence of their
preferences, as on a real site.

Everything is drawn from one ``numpy`` generator seeded with ``settings.demo.seed``: the same seed gives
the same catalogue, shoppers, interactions and contexts, byte for byte.

Hidden preferences (a JSON object):
- ``category_affinity``: {category: weight}, weights sum to 1 and concentrate on 2-3 categories;
- ``budget`` (typical price in GBP) and ``price_sensitivity`` in [0, 1]: how much prices above the
  budget hurt;
- ``liked``: {"material": [...], "color": [...], "style": [...]} attributes the shopper is drawn to;
- ``disliked``: {"color": [...]}: a colour they avoid;
- ``quality_weight``: how much the item's rating matters.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rlhf.settings import Settings, get_settings
from storage import Store
from storage.records import CatalogItem

log = logging.getLogger(__name__)

#: Demo accounts: (user name, role). Passwords are printed by ``init --demo``; they are for a demo only.
DEMO_ACCOUNTS: tuple[tuple[str, str], ...] = (
    ("ann1", "annotator"),
    ("ann2", "annotator"),
    ("ann3", "annotator"),
    ("engineer", "engineer"),
    ("manager", "manager"),
    ("admin", "admin"),
)


def demo_password(username: str) -> str:
    """The demo password of a demo account (public by design: demo data only)."""
    return f"{username}-demo"


# (noun, low price, high price) per category; materials per category; shared colours and styles.
_CATALOG: dict[str, tuple[list[tuple[str, float, float]], list[str]]] = {
    "Coffee & Tea": (
        [
            ("Pour-Over Coffee Dripper", 18, 45),
            ("French Press", 25, 70),
            ("Tea Infuser", 6, 18),
            ("Milk Frother", 15, 60),
            ("Coffee Grinder", 35, 160),
            ("Espresso Cup Set", 14, 40),
            ("Loose Leaf Tea Tin", 8, 22),
            ("Travel Mug", 12, 35),
            ("Teapot", 20, 75),
            ("Cold Brew Bottle", 15, 40),
        ],
        ["Ceramic", "Glass", "Stainless Steel", "Stoneware", "Porcelain"],
    ),
    "Kitchen": (
        [
            ("Chef's Knife", 30, 160),
            ("Cutting Board", 15, 60),
            ("Mixing Bowl Set", 20, 70),
            ("Skillet", 25, 90),
            ("Salad Spinner", 15, 40),
            ("Spice Rack", 18, 55),
            ("Utensil Holder", 10, 30),
            ("Measuring Spoon Set", 6, 20),
            ("Casserole Dish", 45, 200),
            ("Rolling Pin", 8, 30),
        ],
        ["Stainless Steel", "Olive Wood", "Bamboo", "Carbon Steel", "Enamel"],
    ),
    "Tableware": (
        [
            ("Dinner Plate Set", 25, 110),
            ("Serving Bowl", 15, 55),
            ("Wine Glasses (Set of 4)", 20, 80),
            ("Napkins (Set of 4)", 14, 40),
            ("Salad Servers", 10, 35),
            ("Table Runner", 15, 50),
            ("Butter Dish", 10, 30),
            ("Cake Stand", 18, 60),
            ("Water Carafe", 12, 40),
            ("Cheese Board", 20, 70),
        ],
        ["Stoneware", "Porcelain", "Glass", "Linen", "Acacia Wood"],
    ),
    "Home Decor": (
        [
            ("Table Vase", 15, 65),
            ("Wall Mirror", 35, 180),
            ("Picture Frame", 8, 40),
            ("Cushion Cover", 12, 45),
            ("Wall Clock", 20, 90),
            ("Decorative Tray", 15, 50),
            ("Plant Pot", 8, 45),
            ("Bookends", 15, 50),
            ("Wall Hanging", 20, 80),
            ("Storage Basket", 15, 55),
        ],
        ["Ceramic", "Rattan", "Brass", "Oak", "Jute"],
    ),
    "Lighting": (
        [
            ("Table Lamp", 30, 150),
            ("Floor Lamp", 60, 260),
            ("Pendant Light", 40, 200),
            ("String Lights", 10, 35),
            ("Reading Light", 18, 60),
            ("Lantern", 15, 60),
            ("Night Light", 10, 30),
            ("Desk Lamp", 25, 110),
            ("Candle Holder", 8, 35),
            ("Wall Sconce", 35, 140),
        ],
        ["Brass", "Rattan", "Glass", "Matte Metal", "Paper"],
    ),
    "Bedding & Bath": (
        [
            ("Duvet Cover", 40, 160),
            ("Pillowcase Pair", 15, 50),
            ("Throw Blanket", 25, 110),
            ("Bath Towel", 12, 40),
            ("Bath Mat", 15, 45),
            ("Bathrobe", 35, 110),
            ("Fitted Sheet", 20, 70),
            ("Shower Curtain", 18, 55),
            ("Hand Towel Set", 14, 40),
            ("Weighted Blanket", 60, 180),
        ],
        ["Linen", "Organic Cotton", "Waffle Cotton", "Bamboo", "Wool"],
    ),
    "Garden & Outdoor": (
        [
            ("Watering Can", 12, 45),
            ("Garden Trowel", 8, 28),
            ("Bird Feeder", 12, 50),
            ("Raised Planter", 35, 150),
            ("Pruning Shears", 15, 60),
            ("Outdoor Cushion", 20, 60),
            ("Herb Garden Kit", 15, 40),
            ("Solar Path Light", 10, 40),
            ("Hammock", 40, 160),
            ("Picnic Blanket", 20, 65),
        ],
        ["Galvanised Steel", "Teak", "Recycled Plastic", "Cedar", "Copper"],
    ),
    "Stationery": (
        [
            ("Dot Grid Notebook", 8, 28),
            ("Fountain Pen", 15, 120),
            ("Desk Organiser", 15, 55),
            ("Weekly Planner", 10, 32),
            ("Washi Tape Set", 6, 18),
            ("Greeting Card Set", 8, 22),
            ("Sketchbook", 8, 30),
            ("Pencil Case", 6, 24),
            ("Journal", 20, 70),
            ("Gel Pen Set", 6, 20),
        ],
        ["Recycled Paper", "Leather", "Brass", "Bamboo", "Cork"],
    ),
    "Toys & Games": (
        [
            ("Wooden Puzzle", 10, 35),
            ("Board Game", 20, 60),
            ("Building Blocks", 20, 80),
            ("Plush Bear", 12, 40),
            ("Jigsaw (1000 Pieces)", 14, 30),
            ("Stacking Rings", 10, 28),
            ("Card Game", 8, 20),
            ("Kite", 12, 40),
            ("Marble Run", 25, 75),
            ("Play Kitchen Set", 20, 60),
        ],
        ["Beech Wood", "Organic Cotton", "Recycled Plastic", "Felt", "Cardboard"],
    ),
    "Wellness & Beauty": (
        [
            ("Bath Salts", 8, 28),
            ("Hand Cream", 6, 25),
            ("Oil Diffuser", 25, 80),
            ("Face Roller", 12, 40),
            ("Soap Bar Trio", 8, 24),
            ("Yoga Mat", 20, 90),
            ("Massage Ball Set", 8, 25),
            ("Lip Balm Set", 5, 16),
            ("Sleep Mask", 8, 30),
            ("Body Brush", 8, 25),
        ],
        ["Lavender", "Eucalyptus", "Rose", "Unscented", "Cedarwood"],
    ),
    "Bags & Accessories": (
        [
            ("Tote Bag", 12, 60),
            ("Backpack", 35, 150),
            ("Card Wallet", 15, 60),
            ("Umbrella", 15, 55),
            ("Scarf", 20, 90),
            ("Glasses Case", 8, 25),
            ("Weekender Bag", 50, 220),
            ("Key Ring", 5, 18),
            ("Crossbody Bag", 30, 120),
            ("Beanie Hat", 12, 35),
        ],
        ["Canvas", "Leather", "Wool", "Recycled Nylon", "Cork"],
    ),
    "Pet Supplies": (
        [
            ("Dog Bed", 30, 140),
            ("Cat Scratcher", 15, 60),
            ("Pet Food Bowl", 8, 30),
            ("Rope Toy", 5, 15),
            ("Dog Lead", 10, 40),
            ("Pet Blanket", 12, 40),
            ("Treat Jar", 10, 30),
            ("Cat Tunnel", 12, 35),
            ("Grooming Brush", 8, 25),
            ("Dog Water Bottle", 10, 25),
        ],
        ["Organic Cotton", "Rubber", "Bamboo", "Recycled Polyester", "Ceramic"],
    ),
    "Kids' Room": (
        [
            ("Night Lamp", 15, 45),
            ("Growth Chart", 10, 30),
            ("Toy Chest", 40, 150),
            ("Bunting", 8, 25),
            ("Cot Mobile", 18, 60),
            ("Story Book Shelf", 30, 110),
            ("Play Mat", 25, 90),
            ("Kids' Backpack", 15, 40),
            ("Height Stool", 20, 60),
            ("Wall Stickers", 6, 20),
        ],
        ["Beech Wood", "Organic Cotton", "Felt", "Recycled Plastic", "Rattan"],
    ),
    "Travel": (
        [
            ("Packing Cubes", 15, 45),
            ("Passport Holder", 10, 40),
            ("Neck Pillow", 12, 35),
            ("Toiletry Bag", 12, 45),
            ("Luggage Tag", 5, 18),
            ("Travel Adapter", 12, 30),
            ("Cabin Suitcase", 60, 250),
            ("Water Bottle", 10, 35),
            ("Travel Journal", 10, 30),
            ("Foldable Duffel", 20, 70),
        ],
        ["Recycled Nylon", "Leather", "Canvas", "Stainless Steel", "Cork"],
    ),
}

COLORS: tuple[str, ...] = (
    "Sage Green",
    "Charcoal",
    "Terracotta",
    "Ivory",
    "Navy",
    "Mustard",
    "Blush Pink",
    "Natural",
    "Matte Black",
    "Sky Blue",
)
STYLES: tuple[str, ...] = (
    "Minimalist",
    "Rustic",
    "Scandinavian",
    "Vintage",
    "Modern",
    "Boho",
    "Industrial",
    "Classic",
)
_CARE = (
    "Designed for everyday use.",
    "Easy to care for.",
    "A thoughtful gift.",
    "Small-batch made.",
    "Built to last.",
    "Sold individually.",
)

# Weights of the ground-truth utility (documented in item_utility).
_W_CATEGORY = 2.0
_W_LIKED = 0.6
_W_DISLIKED = 0.8
_W_PRICE = 1.5


@dataclass(frozen=True)
class DemoShop:
    """The generated shop before it is stored (frames in catalog_items / shoppers / interactions shape)."""

    items: pd.DataFrame
    shoppers: pd.DataFrame
    interactions: pd.DataFrame


@dataclass(frozen=True)
class DemoReport:
    """What ``init --demo`` built."""

    items: int
    categories: int
    shoppers: int
    interactions: int
    contexts: int
    accounts: tuple[tuple[str, str, str], ...]  # (user, role, password)
    seconds: float


# --- ground truth ------------------------------------------------------------------------------------


def _field(item: Any, name: str) -> Any:
    if isinstance(item, Mapping):
        return item.get(name)
    return getattr(item, name, None)


def item_utility(prefs: Mapping[str, Any], item: CatalogItem | Mapping[str, Any]) -> float:
    """How much a shopper with hidden preferences ``prefs`` values ``item`` (ground truth for simulations).

    utility = 2.0 * affinity(category) / max affinity               (0 .. 2)
            + 0.6 * number of liked attributes the item has        (material, colour, style)
            - 0.8 * number of disliked attributes it has
            - 1.5 * price_sensitivity * max(0, ln(price / budget))  (only prices above budget hurt)
            + quality_weight * (rating - 4)                          (rating 3..5)
    ``item`` is a CatalogItem or a dict with category, price and attributes.
    """
    affinity: Mapping[str, float] = prefs.get("category_affinity") or {}
    top = max(affinity.values()) if affinity else 1.0
    u = _W_CATEGORY * float(affinity.get(_field(item, "category") or "", 0.0)) / (top or 1.0)
    attrs: Mapping[str, Any] = _field(item, "attributes") or {}
    liked: Mapping[str, Sequence[str]] = prefs.get("liked") or {}
    disliked: Mapping[str, Sequence[str]] = prefs.get("disliked") or {}
    for key, values in liked.items():
        if attrs.get(key) in values:
            u += _W_LIKED
    for key, values in disliked.items():
        if attrs.get(key) in values:
            u -= _W_DISLIKED
    price = _field(item, "price")
    budget = float(prefs.get("budget") or 0.0)
    if price and budget > 0 and price > budget:
        u -= _W_PRICE * float(prefs.get("price_sensitivity", 0.5)) * math.log(float(price) / budget)
    rating = attrs.get("rating")
    if rating is not None:
        u += float(prefs.get("quality_weight", 0.0)) * (float(rating) - 4.0)
    return float(u)


def list_utility(prefs: Mapping[str, Any], items: Sequence[CatalogItem | Mapping[str, Any] | None]) -> float:
    """Ground-truth value of a ranked list: sum of item utilities discounted by position (DCG).

    Position i (0-based) is weighted 1 / log2(i + 2). A repeated item adds nothing the second time, and an
    entry that is None (an id not in the catalogue) adds nothing, so padding a list never helps.
    """
    total = 0.0
    seen: set[str] = set()
    for position, item in enumerate(items):
        if item is None:
            continue
        key = str(_field(item, "item_id"))
        if key in seen:
            continue
        seen.add(key)
        total += item_utility(prefs, item) / math.log2(position + 2)
    return float(total)


def utility_fn_for_store(store: Store) -> Callable[[Any, Sequence[str]], float]:
    """``utility_fn(context, item_ids) -> float`` for simulated annotators on the demo shop.

    Reads the shoppers' hidden preferences and the catalogue once; unknown ids count as None.
    """
    from storage import catalog as catalog_repo

    with store.transaction() as con:
        shoppers = {s.shopper_id: s.hidden_preferences or {} for s in catalog_repo.all_shoppers(con)}
        items = {i.item_id: i for i in catalog_repo.all_items(con)}

    def utility(context: Any, item_ids: Sequence[str]) -> float:
        return list_utility(shoppers.get(context.shopper_id, {}), [items.get(i) for i in item_ids])

    return utility


def utility_matrix(prefs: Sequence[Mapping[str, Any]], items: pd.DataFrame) -> np.ndarray:
    """:func:`item_utility` for every (shopper, item) pair at once: shape (len(prefs), len(items)).

    ``items`` has columns category, price and attributes (dicts). Vectorised over items; a test checks
    that it equals :func:`item_utility` entry by entry.
    """
    categories = items["category"].fillna("").to_numpy(dtype=object)
    price = pd.to_numeric(items["price"], errors="coerce").to_numpy(dtype=float)
    attrs = [a if isinstance(a, Mapping) else {} for a in items["attributes"]]
    keys = {k for p in prefs for group in ("liked", "disliked") for k in (p.get(group) or {})}
    attr_values = {k: np.array([a.get(k) for a in attrs], dtype=object) for k in keys}
    rating = np.array(
        [a.get("rating", np.nan) if a.get("rating") is not None else np.nan for a in attrs], dtype=float
    )
    out = np.zeros((len(prefs), len(items)))
    for row, p in enumerate(prefs):
        affinity = p.get("category_affinity") or {}
        top = max(affinity.values()) if affinity else 1.0
        aff = np.array([float(affinity.get(c, 0.0)) for c in categories])
        u = _W_CATEGORY * aff / (top or 1.0)
        for key, values in (p.get("liked") or {}).items():
            u += _W_LIKED * np.isin(attr_values[key], list(values))
        for key, values in (p.get("disliked") or {}).items():
            u -= _W_DISLIKED * np.isin(attr_values[key], list(values))
        budget = float(p.get("budget") or 0.0)
        if budget > 0:
            over = np.nan_to_num(price, nan=0.0) > budget
            ratio = np.where(over, np.nan_to_num(price, nan=budget) / budget, 1.0)
            u -= _W_PRICE * float(p.get("price_sensitivity", 0.5)) * np.log(ratio)
        u += np.where(np.isnan(rating), 0.0, float(p.get("quality_weight", 0.0)) * (rating - 4.0))
        out[row] = u
    return out


# --- generation --------------------------------------------------------------------------------------


def generate_shop(settings: Settings | None = None) -> DemoShop:
    """Draw the demo shop from ``settings.demo`` (pure: no store involved; same seed, same frames)."""
    cfg = (settings or get_settings()).demo
    rng = np.random.default_rng(cfg.seed)
    categories = list(_CATALOG)[: max(1, min(cfg.n_categories, len(_CATALOG)))]
    items = _generate_items(rng, categories, cfg.n_items)
    prefs = [_generate_preferences(rng, categories) for _ in range(cfg.n_shoppers)]
    shopper_ids = [f"S{n:04d}" for n in range(1, cfg.n_shoppers + 1)]
    segments = [_segment(p) for p in prefs]
    shoppers = pd.DataFrame(
        {
            "shopper_id": shopper_ids,
            "segment": segments,
            "attributes": [json.dumps({"segment": s}, sort_keys=True) for s in segments],
            "hidden_preferences": [json.dumps(p, sort_keys=True) for p in prefs],
        }
    )
    interactions = _generate_interactions(rng, items, shopper_ids, prefs, cfg)
    items = items.assign(attributes=[json.dumps(a, sort_keys=True) for a in items["attributes"]])
    return DemoShop(items=items, shoppers=shoppers, interactions=interactions)


def _generate_items(rng: np.random.Generator, categories: list[str], n_items: int) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    per_category = [
        n_items // len(categories) + (1 if k < n_items % len(categories) else 0)
        for k in range(len(categories))
    ]
    for category, count in zip(categories, per_category):
        nouns, materials = _CATALOG[category]
        combos = [(n, m) for n in range(len(nouns)) for m in range(len(materials))]
        order = rng.permutation(len(combos))
        used_titles: set[str] = set()
        for k in range(count):
            noun_i, mat_i = combos[order[k % len(combos)]]
            noun, low, high = nouns[noun_i]
            material = materials[mat_i]
            color = COLORS[int(rng.integers(len(COLORS)))]
            style = STYLES[int(rng.integers(len(STYLES)))]
            title = f"{material} {noun}"
            if title in used_titles or rng.random() < 0.35:
                title = f"{style} {material} {noun}"
            if title in used_titles:
                title = f"{style} {material} {noun} – {color}"
            while title in used_titles:  # pragma: no cover - only with very large n_items
                title += " II"
            used_titles.add(title)
            price = math.exp(rng.uniform(math.log(low), math.log(high)))
            price = round(max(2.0, round(price)) - 0.01, 2)
            rating = round(float(np.clip(rng.normal(4.2, 0.45), 3.0, 5.0)), 1)
            description = (
                f"{style} {noun.lower()} in {material.lower()}, {color.lower()} finish. "
                f"{_CARE[int(rng.integers(len(_CARE)))]}"
            )
            rows.append(
                {
                    "title": title,
                    "description": description,
                    "category": category,
                    "price": price,
                    "attributes": {"material": material, "color": color, "style": style, "rating": rating},
                }
            )
    frame = pd.DataFrame(rows)
    frame.insert(0, "item_id", [f"D{n:04d}" for n in range(1, len(frame) + 1)])
    return frame


def _generate_preferences(rng: np.random.Generator, categories: list[str]) -> dict[str, Any]:
    weights = rng.dirichlet(np.full(len(categories), 0.35))
    affinity = {c: round(float(w), 4) for c, w in zip(categories, weights) if w >= 0.01}
    materials = sorted({m for c in categories for m in _CATALOG[c][1]})
    liked_colors = list(rng.choice(len(COLORS), size=2, replace=False))
    disliked = [c for c in range(len(COLORS)) if c not in liked_colors]
    return {
        "category_affinity": affinity,
        "budget": round(float(math.exp(rng.normal(math.log(40.0), 0.6))), 2),
        "price_sensitivity": round(float(rng.beta(2.0, 2.0)), 3),
        "liked": {
            "material": [materials[int(i)] for i in rng.choice(len(materials), size=3, replace=False)],
            "color": [COLORS[int(i)] for i in liked_colors],
            "style": [STYLES[int(rng.integers(len(STYLES)))]],
        },
        "disliked": {"color": [COLORS[int(disliked[int(rng.integers(len(disliked)))])]]},
        "quality_weight": round(float(rng.uniform(0.0, 0.8)), 3),
    }


def _segment(prefs: Mapping[str, Any]) -> str:
    if prefs["price_sensitivity"] > 0.6 and prefs["budget"] < 40:
        return "bargain hunter"
    if prefs["budget"] > 70:
        return "premium"
    return "regular"


def _generate_interactions(
    rng: np.random.Generator,
    items: pd.DataFrame,
    shopper_ids: list[str],
    prefs: list[dict[str, Any]],
    cfg: Any,
) -> pd.DataFrame:
    """Sessions over ``cfg.days``: views drawn by utility inside a favourite category, some bought."""
    utilities = utility_matrix(prefs, items)
    categories = items["category"].to_numpy()
    cat_index = {c: np.flatnonzero(categories == c) for c in dict.fromkeys(categories)}
    start = pd.Timestamp(cfg.start).to_datetime64().astype("datetime64[s]")
    rows_s: list[str] = []
    rows_i: list[str] = []
    rows_e: list[str] = []
    rows_t: list[np.datetime64] = []
    rows_q: list[int] = []
    item_ids = items["item_id"].to_numpy()
    for s, (shopper, p) in enumerate(zip(shopper_ids, prefs)):
        u = utilities[s]
        cats = list(p["category_affinity"])
        cat_w = np.array([p["category_affinity"][c] for c in cats])
        cat_w = cat_w / cat_w.sum()
        n_sessions = 2 + int(rng.poisson(max(cfg.sessions_mean - 2, 0.5)))
        day_offsets = np.sort(rng.choice(cfg.days, size=min(n_sessions, cfg.days), replace=False))
        bought = np.zeros(len(item_ids), dtype=bool)
        for day in day_offsets:
            t = start + np.timedelta64(int(day) * 86400 + int(rng.integers(8 * 3600, 22 * 3600)), "s")
            focus = cats[int(rng.choice(len(cats), p=cat_w))]
            pool = cat_index.get(focus, np.arange(len(item_ids)))
            if rng.random() < 0.2:
                pool = np.arange(len(item_ids))
            logits = u[pool] / 0.6 - 3.0 * bought[pool]
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            n_views = min(len(pool), 2 + int(rng.integers(0, 5)))
            viewed = pool[rng.choice(len(pool), size=n_views, replace=False, p=probs)]
            for j in viewed:
                t = t + np.timedelta64(int(rng.integers(20, 240)), "s")
                rows_s.append(shopper), rows_i.append(item_ids[j]), rows_e.append("view")
                rows_t.append(t), rows_q.append(1)
            # Buy the best-liked viewed items with a probability that rises with utility.
            for j in viewed[np.argsort(-u[viewed], kind="stable")]:
                p_buy = 1.0 / (1.0 + math.exp(-(u[j] - 1.8) * 2.0))
                if not bought[j] and rng.random() < p_buy:
                    t = t + np.timedelta64(int(rng.integers(30, 600)), "s")
                    bought[j] = True
                    rows_s.append(shopper), rows_i.append(item_ids[j]), rows_e.append("purchase")
                    rows_t.append(t), rows_q.append(1 + int(rng.random() < 0.1))
    return pd.DataFrame(
        {
            "shopper_id": rows_s,
            "item_id": rows_i,
            "event": rows_e,
            "ts": np.array(rows_t, dtype="datetime64[us]"),
            "quantity": np.array(rows_q, dtype=np.int64),
        }
    )


# --- building the demo store -------------------------------------------------------------------------


def build_demo(
    store: Store,
    settings: Settings | None = None,
    *,
    with_contexts: bool = True,
    with_accounts: bool = True,
    on_stage: Callable[[str], None] | None = None,
) -> DemoReport:
    """Generate the demo shop and write it: catalogue, shoppers and interactions in one transaction, then
    the demo accounts and the contexts. The store should be empty (the CLI refuses otherwise).
    """
    from rlhf import importing

    settings = settings or get_settings()
    started = time.perf_counter()
    if on_stage:
        on_stage("generate")
    shop = generate_shop(settings)
    if on_stage:
        on_stage("validate")
    items = importing.validate_catalog(shop.items, limits=settings.imports, what="The demo catalogue")
    interactions = importing.validate_interactions(
        shop.interactions,
        known_items=pd.Index(items["item_id"]),
        limits=settings.imports,
        what="The demo interactions",
    )
    if on_stage:
        on_stage("write")
    n_items, n_inter, n_shoppers = importing.write_dataset(
        store,
        items=items,
        interactions=interactions,
        shoppers=shop.shoppers,
        source="demo",
        limits=settings.imports,
    )
    accounts: list[tuple[str, str, str]] = []
    if with_accounts:
        if on_stage:
            on_stage("accounts")
        from rlhf.auth import create_user

        for username, role in DEMO_ACCOUNTS:
            create_user(store, username, demo_password(username), role, display_name=f"{username} (demo)")
            accounts.append((username, role, demo_password(username)))
    n_contexts = 0
    if with_contexts:
        if on_stage:
            on_stage("contexts")
        from rlhf.contexts import build_contexts

        n_contexts = build_contexts(store, settings=settings).built
    return DemoReport(
        items=n_items,
        categories=int(items["category"].nunique()),
        shoppers=n_shoppers,
        interactions=n_inter,
        contexts=n_contexts,
        accounts=tuple(accounts),
        seconds=time.perf_counter() - started,
    )
