"""An image classifier's request and response types: the same for every classifier, whatever its labels."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, create_model

from service.tasks.base import Served

TopK = Annotated[
    int,
    Field(ge=1, description="How many tags to return, best first: at most the label count; default 5, or every "
                            "label of a model with fewer."),
]  # fmt: skip
ModelName = Annotated[
    str | None,
    Field(description="Which loaded image classifier answers; default: image-tagging (or the only one loaded)."),
]


class Tag(BaseModel):
    label: str = Field(examples=["cat"])
    score: float = Field(ge=0, le=1, description="Probability of the label.", examples=[0.93])


class Tags(Served):
    tags: list[Tag] = Field(description="Top-k tags, highest score first.")


class TagsBatch(Served):
    results: list[list[Tag]] = Field(description="Top-k tags per photo, in request order.")


class PhotoExplanation(Served):
    """Where in the photo the top tag comes from (occlusion: service/tasks/image/occlusion.py)."""

    label: str = Field(description="The top tag, the one explained.", examples=["cat"])
    score: float = Field(ge=0, le=1, description="Its probability on the whole photo.")
    grid: list[list[float]] = Field(description="Per cell of the model's input, row by row from the top left: how "
                                    "much covering it lowered the top tag's score (negative: raised).")  # fmt: skip
    box: list[float] = Field(description="The part of the photo the grid covers (the model's centre crop), in the "
                             "photo's pixels: left, top, right, bottom.")  # fmt: skip
    photo_size: list[int] = Field(description="The photo's width and height (upright).")
    method: str = Field(description="How the map was made.")
    rows_run: int = Field(description="Images the model ran: the explanation's cost.")


class PhotoOptions(BaseModel):
    """The text fields of a multipart photo request (form values are text: "3" is 3)."""

    model_config = ConfigDict(extra="forbid")
    top_k: TopK = 5
    model: ModelName = None


class Base64Photo(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    image_base64: str = Field(description="The photo file (JPEG, PNG or WebP), base64-encoded.", min_length=1)
    top_k: TopK = 5
    model: ModelName = None


def base64_batch(max_images: int) -> type[BaseModel]:
    return create_model(
        "Base64Photos",
        __config__=ConfigDict(extra="forbid", strict=True),
        images_base64=(
            list[str],
            Field(
                min_length=1,
                max_length=max_images,
                description=f"1 to {max_images} photo files, base64-encoded (NNSERVE_MAX_BATCH_IMAGES).",
            ),
        ),
        top_k=(TopK, 5),
        model=(ModelName, None),
    )
