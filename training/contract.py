"""Our three models' inputs and outputs, declared once, for training.

Training builds its tensors from these declarations and export copies them into the model card,
which is the contract at serving time: the service reads only cards (a model of any schema is
served from its folder) and never this module, which is why it lives here and not in service/. The
load tests draw their payloads through these declarations.

Tabular models take two tensors, in the order declared here:
- ``numeric``: float32 [N, len(numeric)], raw values in the declared units (scaling is in the graph);
- ``categorical``: int64 [N, len(categorical)], raw integer codes. For a categorical with a closed
  set of string ``values`` the code is the value's position in that tuple; for an integer ID (zip
  code, ad id) the code is the ID itself. The graph maps codes to embedding rows through a table
  learned from the training data; any code the table does not hold goes to row 0, the unknown bucket.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from service.cards import ApiCard, Task


@dataclass(frozen=True)
class Numeric:
    """A number. Values outside [minimum, maximum] are client errors; inside it but outside the range
    seen in training (recorded in the card) they are served with a warning.

    A date is a number too: sent as "YYYY-MM-DD", fed to the model as a decimal year (2015.25 is
    2015-04-01), so a trend learned on it carries on past the last day of training. Its bounds are
    decimal years, and its default may be "latest": the last date seen in training."""

    name: str
    description: str
    unit: str
    minimum: float
    maximum: float
    example: float | str
    default: float | str | None = None  # None: the client must send it
    integer: bool = False
    boolean: bool = False  # sent as true/false, fed to the model as 1.0/0.0
    date: bool = False  # sent as "YYYY-MM-DD", fed to the model as a decimal year
    column: str = ""  # the training file's column, when its name differs


@dataclass(frozen=True)
class Categorical:
    """A category. Either a closed set of strings (anything else is a client error) or an integer ID in
    [minimum, maximum] whose vocabulary is learned from the training data (unseen IDs are served
    through the unknown bucket, with a warning)."""

    name: str
    description: str
    example: int | str
    values: tuple[str, ...] | None = None
    minimum: int = 0
    maximum: int = 0
    default: int | str | None = None
    column: str = ""  # the training file's column, when its name differs

    def code(self, value: int | str) -> int:
        """The integer the graph receives for a request value."""
        if self.values is None:
            return int(value)
        return self.values.index(str(value))

    @property
    def code_range(self) -> tuple[int, int]:
        if self.values is None:
            return self.minimum, self.maximum
        return 0, len(self.values) - 1


@dataclass(frozen=True)
class TabularSpec:
    name: str
    task: Task
    description: str
    numeric: tuple[Numeric, ...]
    categorical: tuple[Categorical, ...]
    output: str  # name of the ONNX output, shape [N, 1]
    output_unit: str
    api: ApiCard = field(default_factory=ApiCard)  # names and summaries of the typed endpoints

    @property
    def features(self) -> tuple[Numeric | Categorical, ...]:
        return self.numeric + self.categorical


@dataclass(frozen=True)
class ImageSpec:
    name: str
    task: Task
    description: str
    labels: tuple[str, ...]
    size: int  # the graph takes size x size RGB photos
    mean: tuple[float, float, float]  # per-channel, on 0..1 pixels; applied inside the graph
    std: tuple[float, float, float]


# Names of the graph's tensors, shared by every model of a kind.
NUMERIC_INPUT = "numeric"
CATEGORICAL_INPUT = "categorical"
IMAGE_INPUT = "image"
IMAGE_OUTPUT = "probabilities"


HOUSING = TabularSpec(
    name="housing-price",
    task="regression",
    description="Sale price of a house in King County, WA, from what its seller knows about it.",
    numeric=(
        Numeric("sqft_living", "Interior living area.", "sq ft", 100, 20_000, 1_800, integer=True),
        Numeric("bedrooms", "Number of bedrooms.", "count", 0, 15, 3, integer=True),
        Numeric("bathrooms", "Bathrooms; 0.25 steps (a half bath is 0.5).", "count", 0, 10, 2, default=2),
        Numeric("sqft_lot", "Land area of the lot.", "sq ft", 0, 2_000_000, 7_500, default=7_500, integer=True),
        Numeric("floors", "Number of floors (1.5 = one and a half).", "count", 1, 4, 1, default=1),
        Numeric(
            "waterfront",
            "The house overlooks the waterfront.",
            "yes/no: true/false or 1/0",
            0,
            1,
            0,
            default=0,
            boolean=True,
        ),
        Numeric(
            "view",
            "How good the view is, 0 (none) to 4 (excellent).",
            "index",
            0,
            4,
            0,
            default=0,
            integer=True,
        ),
        Numeric(
            "condition",
            "Overall condition, 1 (poor) to 5 (very good).",
            "index",
            1,
            5,
            3,
            default=3,
            integer=True,
        ),
        Numeric(
            "grade",
            "King County building grade, 1 (poor) to 13 (mansion); 7 is average.",
            "index",
            1,
            13,
            7,
            default=7,
            integer=True,
        ),
        Numeric("yr_built", "Year the house was built.", "year", 1800, 2030, 1975, default=1975, integer=True),
        Numeric(
            "yr_renovated",
            "Year of the last renovation; 0 if never renovated.",
            "year",
            0,
            2030,
            0,
            default=0,
            integer=True,
        ),
        Numeric(
            "sqft_basement",
            "Basement area (part of sqft_living).",
            "sq ft",
            0,
            10_000,
            0,
            default=0,
            integer=True,
        ),
        Numeric(
            "sale_date",
            "Date of the sale; default: the last sale date in training. Prices follow a trend learned over "
            "the training months; dates outside them are served with a warning.",
            "date",
            2000,
            2036,
            "2015-01-31",
            default="latest",
            date=True,
            column="date",
        ),
    ),
    categorical=(
        Categorical(
            "zipcode",
            "US ZIP code of the house. ZIP codes not seen in training use the unknown bucket.",
            example=98103,
            minimum=0,
            maximum=99_999,
        ),
    ),
    output="price",
    output_unit="USD",
    api=ApiCard(
        request="HouseFeatures",
        request_doc="One house for sale: what its seller knows about it.",
        batch_request="HouseBatch",
        batch_field="houses",
        response_prefix="Price",
        summary="Predict the sale price of one house.",
        batch_summary="Predict the sale prices of a batch of houses.",
        output_doc="Predicted sale price, US dollars.",
    ),
)

AD_CATEGORIES = (
    "autos", "beauty", "books", "electronics", "fashion", "finance",
    "food", "games", "home", "sports", "telecom", "travel",
)  # fmt: skip

AD_CLICK = TabularSpec(
    name="ad-click",
    task="binary_classification",
    description="Probability that a user clicks an ad shown on a site or app at a given time.",
    numeric=(Numeric("age", "Age of the user.", "years", 13, 100, 34, integer=True),),
    categorical=(
        Categorical(
            "gender",
            "Gender the user declared.",
            "female",
            values=("unknown", "female", "male"),
            default="unknown",
        ),
        Categorical("device", "Device the ad is shown on.", "mobile", values=("mobile", "desktop", "tablet")),
        Categorical("city_id", "City of the user (an ID).", 12, minimum=0, maximum=999_999),
        Categorical(
            "ad_id",
            "The ad (an ID). Ads not seen in training use the unknown bucket.",
            1_234,
            minimum=0,
            maximum=2**31 - 1,
        ),
        Categorical("advertiser_id", "The advertiser who owns the ad (an ID).", 56, minimum=0, maximum=2**31 - 1),
        Categorical("category", "Category of the advertised product.", "electronics", values=AD_CATEGORIES),
        Categorical("site_id", "Site or app the ad is shown on (an ID).", 78, minimum=0, maximum=2**31 - 1),
        Categorical("hour", "Hour of the day, local time, 0-23.", 20, minimum=0, maximum=23),
        Categorical("day_of_week", "Day of the week, 0 = Monday.", 4, minimum=0, maximum=6),
    ),
    output="click_probability",
    output_unit="probability",
    api=ApiCard(
        request="Impression",
        request_doc="One ad impression: who sees which ad, where and when.",
        batch_request="ImpressionBatch",
        batch_field="impressions",
        response_prefix="Click",
        summary="Predict the probability that one impression is clicked.",
        batch_summary="Predict click probabilities for a batch of impressions.",
        output_doc="Probability of a click.",
    ),
)

CIFAR10_LABELS = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

IMAGE_TAGGING = ImageSpec(
    name="image-tagging",
    task="image_classification",
    description="Object tags with scores for a photo: a CNN trained on CIFAR-10's ten classes.",
    labels=CIFAR10_LABELS,
    size=32,
    mean=(0.4914, 0.4822, 0.4465),  # CIFAR-10 training-set channel statistics
    std=(0.2470, 0.2435, 0.2616),
)

TABULAR: dict[str, TabularSpec] = {s.name: s for s in (HOUSING, AD_CLICK)}
