"""The request bodies of every tracking endpoint, as pydantic models.

The labeling tool and the SDK's clients spell some keys two or three ways (``frameIndex`` /
``frame_index``); each model accepts every spelling the SDK accepts and ignores keys it does
not use (the tool sends more). ``parse`` turns a validation failure into one ``InputError``
naming the field the way the caller wrote it (``context.frameIndex``) and the rule, so a bad
request is a JSON 4xx before any frame is downloaded.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    model_validator,
)

from .validation import InputError

Model = TypeVar("Model", bound=BaseModel)
Direction = Literal["forward", "backward"]
Id = StrictInt  # platform ids are JSON integers; a bool or a string is a malformed request


def _aliases(*names: str) -> Any:
    return AliasChoices(*names)


class _Lenient(BaseModel):
    """Unknown keys are kept out of the way, not refused: the tool sends more than we read."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class FigureJson(_Lenient):
    """A figure as the newer tool sends it inside ``context.figures`` (``/track_async``)."""

    id: Id | str
    object_id: Id = Field(validation_alias=_aliases("objectId", "object_id"))
    geometry_type: str = Field(validation_alias=_aliases("geometryType", "geometry_type"))
    geometry: dict[str, Any]


class InputGeometry(_Lenient):
    """``{type, data}`` of ``/track-api`` and ``/track-api-files``."""

    type: str
    data: dict[str, Any]


class _RangeContext(_Lenient):
    """What every tracking request says about where to track."""

    video_id: Id = Field(validation_alias=_aliases("videoId", "video_id"), ge=0)
    frame_index: StrictInt = Field(validation_alias=_aliases("frameIndex", "frame_index"), ge=0)
    frames: StrictInt = Field(
        validation_alias=_aliases("frames", "framesCount", "frames_count"), ge=1
    )
    direction: Direction = "forward"

    @property
    def step(self) -> int:
        return 1 if self.direction == "forward" else -1

    def frame_indexes(self) -> list[int]:
        """The annotated frame first, then ``frames`` more in the tracking direction."""
        return [self.frame_index + i * self.step for i in range(self.frames + 1)]


class TrackContext(_RangeContext):
    """``/track`` (the older tool): figures by id, results uploaded by the app."""

    track_id: str | Id = Field(validation_alias=_aliases("trackId", "track_id"))
    object_ids: list[Id] = Field(validation_alias=_aliases("objectIds", "object_ids"))
    figure_ids: list[Id] = Field(validation_alias=_aliases("figureIds", "figure_ids"), min_length=1)
    frame_width: StrictInt | None = Field(
        default=None, validation_alias=_aliases("frameWidth", "frame_width")
    )
    frame_height: StrictInt | None = Field(
        default=None, validation_alias=_aliases("frameHeight", "frame_height")
    )

    @model_validator(mode="after")
    def _one_object_per_figure(self) -> TrackContext:
        if len(self.object_ids) != len(self.figure_ids):
            raise ValueError(
                f"objectIds has {len(self.object_ids)} ids for {len(self.figure_ids)} figureIds; "
                "give one object id per figure"
            )
        return self


class TrackAsyncContext(_RangeContext):
    """``/track_async`` (the newer tool): full figures in, results pulled by the tool."""

    figures: list[FigureJson] = Field(min_length=1)
    track_id: str | Id = Field(default="auto", validation_alias=_aliases("trackId", "track_id"))
    session_id: str | Id | None = Field(
        default=None, validation_alias=_aliases("sessionId", "session_id")
    )
    direct_progress: StrictBool = Field(
        default=False, validation_alias=_aliases("useDirectProgressMessages")
    )
    batch_size: StrictInt | None = Field(default=None, ge=1)


class TrackApiContext(_RangeContext):
    """``/track-api``: geometries in, an N x K answer out, synchronously."""

    input_geometries: list[InputGeometry] = Field(
        validation_alias=_aliases("input_geometries", "inputGeometries"), min_length=1
    )


class RequestRef(_Lenient):
    """``/pop_tracking_results``, ``/stop_tracking``, ``/clear_tracking_results``."""

    uuid: str = Field(
        validation_alias=_aliases("inference_request_uuid", "inferenceRequestUuid"), min_length=1
    )
    frame_range: list[StrictInt] | None = Field(
        default=None,
        validation_alias=_aliases("frameRange", "frame_range", "frames"),
        min_length=2,
        max_length=2,
    )


class FilesSettings(_Lenient):
    """The ``settings`` form field of ``/track-api-files``."""

    frame_index: StrictInt = Field(validation_alias=_aliases("frame_index", "frameIndex"), ge=0)
    frames: StrictInt = Field(validation_alias=_aliases("frames", "framesCount"), ge=0)
    direction: Direction = "forward"
    input_geometries: list[InputGeometry] = Field(
        validation_alias=_aliases("input_geometries", "inputGeometries"), min_length=1
    )


def _field(prefix: str, loc: tuple[Any, ...]) -> str:
    name = prefix
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else f".{part}"
    return name


def parse(model: type[Model], data: Any, prefix: str) -> Model:
    """Validate ``data`` (``prefix`` names it: ``context``, ``settings``); one ``InputError``
    naming the first bad field, with status 400."""
    if not isinstance(data, dict):
        raise InputError(prefix, f"must be a JSON object, got {type(data).__name__}", 400)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = _field(prefix, tuple(first["loc"]))
        value = first.get("input")
        shown = "" if first["type"] == "missing" or not first["loc"] else f", got {value!r:.60}"
        text = str(first["msg"]).removeprefix("Value error, ")
        message = "is required" if first["type"] == "missing" else text[:1].lower() + text[1:]
        raise InputError(field, f"{message}{shown}", 400) from None
