"""One router for every route nnserve answers itself, /v1 and /v2 alike: templates of literal and
`{parameter}` segments, matched on the path's segments, literal routes before parameter ones.

A route also says how the request metrics label it: the template with its model filled in when that
names something served, so that every served model's routes have series of their own while invented
paths share one per API ("/v1/(unmatched)"); a version stays `{version}`. Matches are cached by path
(a bounded table), so a request for a route already seen costs one lookup.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Handler = Callable[..., Awaitable[None]]  # (ctx, params, receive, send)
UNMATCHED = {"v1": "/v1/(unmatched)", "v2": "/v2/(unmatched)"}
CACHE_SIZE = 4096


@dataclass(frozen=True)
class Route:
    template: str
    methods: tuple[str, ...]
    handler: Handler
    prediction: bool = False  # admitted, counted in flight, under the drain, measured per version
    # How the request metrics label a request it took: the template with its model filled in, or None
    # (the model is not served: the API's "(unmatched)"); without it, the template itself.
    label: Callable[[Route, dict[str, str]], str | None] | None = None
    segments: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", tuple(self.template.split("/")))

    @property
    def literals(self) -> int:
        return sum(not s.startswith("{") for s in self.segments)

    def match(self, parts: list[str]) -> dict[str, str] | None:
        params: dict[str, str] = {}
        for want, got in zip(self.segments, parts, strict=True):
            if want.startswith("{"):
                if not got:
                    return None
                params[want[1:-1]] = got
            elif want != got:
                return None
        return params

    def labelled(self, params: dict[str, str]) -> str:
        if self.label is None:
            return self.template
        label = self.label(self, params)
        return label if label is not None else UNMATCHED.get(self.segments[1], "(unmatched)")


@dataclass(frozen=True)
class Match:
    route: Route | None  # None: the path matches no route (404), or no route takes the method (405)
    params: dict[str, str]
    allowed: tuple[str, ...] = ()  # the methods the path's routes take, for a 405's Allow


class Router:
    def __init__(self, routes: list[Route]) -> None:
        self.by_length: dict[int, list[Route]] = {}
        for route in sorted(routes, key=lambda r: -r.literals):  # literal segments first: /v1/models/x
            self.by_length.setdefault(len(route.segments), []).append(route)  # is not model "models"
        self.cache: dict[tuple[str, str], Match] = {}

    def match(self, method: str, path: str) -> Match:
        key = (method, path)
        found = self.cache.get(key)
        if found is None:
            found = self._match("GET" if method == "HEAD" else method, path)
            if len(self.cache) >= CACHE_SIZE:  # invented paths must not grow it without bound
                self.cache.clear()
            self.cache[key] = found
        return found

    def _match(self, method: str, path: str) -> Match:
        """The first route of the most literal ones that match the path and take the method; when the most
        literal that match the path take other methods, none (a 405 allowing those)."""
        parts = path.split("/")
        allowed: list[str] = []
        best = None
        for route in self.by_length.get(len(parts), ()):
            if best is not None and route.literals < best:
                break
            params = route.match(parts)
            if params is None:
                continue
            best = route.literals
            if method in route.methods:
                return Match(route, params)
            allowed += [m for m in route.methods if m not in allowed]
        if "GET" in allowed and "HEAD" not in allowed:
            allowed.insert(allowed.index("GET") + 1, "HEAD")  # HEAD: the GET's status and headers
        return Match(None, {}, tuple(allowed))
