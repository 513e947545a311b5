"""The networks, as plain nn.Modules. Each exported module takes raw inputs as the contract declares
them and does its own preprocessing, so the ONNX graph is all the service needs."""

from __future__ import annotations

from itertools import accumulate

import torch
from torch import nn


class CodeLookup(nn.Module):
    """Maps raw integer codes in [low, low + len(table)) to embedding rows; anything else to row 0.

    The table is a buffer, so the mapping travels inside the ONNX graph."""

    def __init__(self, low: int, table: torch.Tensor) -> None:
        super().__init__()
        self.low = low
        self.register_buffer("table", table.long())

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        pos = codes - self.low
        inside = (pos >= 0) & (pos < self.table.shape[0])
        return torch.where(inside, self.table[pos.clamp(0, self.table.shape[0] - 1)], torch.zeros_like(pos))


def _starts(counts: list[int]) -> list[int]:
    """Where each of several blocks of these sizes starts, laid end to end."""
    return [0, *accumulate(counts)][: len(counts)]


class StackedLookup(nn.Module):
    """Every column's CodeLookup as one, for export: codes [N, C] -> rows [N, C] of a row space stacking
    each column's rows (its lookup's 0..max) one column after the other.

    Column by column, a code costs onnxruntime a dozen nodes (bounds, clamp, gathers), ~0.7 us each at
    one row: 9 columns were ~100 of the ad-click graph's ~116 working nodes. Stacked, every column goes
    through the same handful. The tables are stored once, as before (a click log's are its largest part)."""

    def __init__(self, lookups: list[CodeLookup]) -> None:
        super().__init__()
        rows = [int(lk.table.max()) + 1 for lk in lookups]
        first_row, first_pos = _starts(rows), _starts([len(lk.table) + 1 for lk in lookups])
        self.rows = rows  # each column's row count, for StackedMatrices
        self.register_buffer("low", torch.tensor([lk.low for lk in lookups], dtype=torch.long))
        self.register_buffer("size", torch.tensor([len(lk.table) for lk in lookups], dtype=torch.long))
        self.register_buffer("start", torch.tensor(first_pos, dtype=torch.long))
        # each column's table, then the row of a code outside its range (the lookup's row 0), shifted to its rows
        self.register_buffer("table", torch.cat([torch.cat([lk.table, lk.table.new_zeros(1)]) + first_row[c]
                                                 for c, lk in enumerate(lookups)]))  # fmt: skip

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        pos = codes - self.low
        inside = (pos >= 0) & (pos < self.size)
        return self.table[torch.where(inside, pos, self.size) + self.start]


class StackedMatrices(nn.Module):
    """Each column's matrix (an embedding's weight) in one table: the rows [N, C] of a StackedLookup (or
    StackedBins) -> the matrix rows they pick, side by side, [N, sum of widths]. `maps[c]`, when given,
    first maps column c's lookup row to its matrix's row (a click net's deep embeddings keep rows for
    frequent codes only)."""

    def __init__(self, source: StackedLookup | StackedBins, matrices: list[torch.Tensor],
                 maps: list[torch.Tensor] | None = None) -> None:  # fmt: skip
        super().__init__()
        self.reads = "codes" if isinstance(source, StackedLookup) else "bins"  # which rows it is given (Stacked)
        sizes = [len(m) for m in maps] if maps is not None else [m.shape[0] for m in matrices]
        if sizes != source.rows:
            raise ValueError(f"the matrices' rows {sizes} are not the lookups' {source.rows}")
        width = max(m.shape[1] for m in matrices)
        first = _starts([m.shape[0] for m in matrices])
        self.register_buffer(
            "weight", torch.cat([nn.functional.pad(m.detach(), (0, width - m.shape[1])) for m in matrices])
        )
        self.register_buffer("map", torch.cat([m.long() + first[c] for c, m in enumerate(maps)]) if maps else None)
        # The padding goes by slicing out the runs of real columns: a gather along the columns (index_select)
        # costs onnxruntime ~7 ns an element, which made a batch of 1,000 rows twice as slow as before.
        self.spans: list[tuple[int, int]] = []
        for c, m in enumerate(matrices):
            a, b = c * width, c * width + m.shape[1]
            if self.spans and self.spans[-1][1] == a:
                a = self.spans.pop()[0]
            self.spans.append((a, b))

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        flat = self.weight[rows if self.map is None else self.map[rows]].flatten(1)  # [N, C * width]
        if self.spans == [(0, flat.shape[1])]:  # no padding
            return flat
        return torch.cat([flat[:, a:b] for a, b in self.spans], dim=1)


class StackedBins(nn.Module):
    """Every numeric column's quantile bin at once, for export: numbers [N, F] -> rows [N, F] of a row
    space stacking each column's bins (the count of its edges below the value), as StackedLookup does
    for codes. Edges padded with +inf, which no value is above: the counts are the columns' own."""

    def __init__(self, edges: list[torch.Tensor]) -> None:
        super().__init__()
        self.rows = [len(e) + 1 for e in edges]
        most = max(len(e) for e in edges)
        padded = [torch.cat([e.float(), torch.full((most - len(e),), float("inf"))]) for e in edges]
        self.register_buffer("edges", torch.stack(padded))  # [F, most]
        self.register_buffer("start", torch.tensor(_starts(self.rows)))

    def forward(self, numeric: torch.Tensor) -> torch.Tensor:
        return (numeric.unsqueeze(2) > self.edges).sum(dim=2) + self.start


class Stacked(nn.Module):
    """A tabular net as exported: its code columns through one StackedLookup, its numbers' bins through
    one StackedBins, and the matrices they feed (StackedMatrices, each given the rows it was built on,
    named as the net's `raw` takes them: "codes", "wide_codes", "bins", "wide_bins") handed to the net's
    forward already looked up. The net is shared, not copied."""

    def __init__(self, net: nn.Module, codes: StackedLookup | None, bins: StackedBins | None,
                 matrices: dict[str, StackedMatrices]) -> None:  # fmt: skip
        super().__init__()
        self.net, self.codes, self.bins = net, codes, bins
        self.matrices = nn.ModuleDict(matrices)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        rows = {"codes": self.codes(categorical) if self.codes is not None else None,
                "bins": self.bins(numeric) if self.bins is not None else None}  # fmt: skip
        looked = {name: m(rows[m.reads]) for name, m in self.matrices.items()}
        return self.net(numeric, categorical, looked)


class TabularNet(nn.Module):
    """Standardised numeric features + one embedding per categorical -> ReLU MLP -> one output.

    `output` decides the head: "log_dollars" returns exp(y * scale + shift) (dollars),
    "probability" returns sigmoid(y), "linear" returns y * scale + shift."""

    def __init__(
        self,
        num_mean: torch.Tensor,
        num_std: torch.Tensor,
        lookups: list[CodeLookup],
        embedding_dims: list[int],
        hidden: tuple[int, ...],
        output: str,
        target_shift: float = 0.0,
        target_scale: float = 1.0,
        dropout: float = 0.0,
        log_mask: torch.Tensor | None = None,
        bucket_edges: dict[int, torch.Tensor] | None = None,
        bucket_dim: int = 8,
        activation: str = "relu",
        trend_mask: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        # Heavy-tailed features (areas) enter as log1p(x): the graph takes raw values either way.
        self.register_buffer("log_mask", torch.zeros_like(num_mean, dtype=torch.bool) if log_mask is None else log_mask)
        self.register_buffer("num_mean", num_mean.float())
        self.register_buffer("num_std", num_std.float())
        # Trend columns (a sale date) bypass the MLP and add a linear term to the output: a ReLU stack
        # extrapolates unpredictably past the last day of training, a line carries on at its rate.
        trend = torch.zeros_like(num_mean, dtype=torch.bool) if trend_mask is None else trend_mask
        self.register_buffer("mlp_columns", torch.nonzero(~trend).flatten())
        self.register_buffer("trend_columns", torch.nonzero(trend).flatten())
        self.trend = nn.Linear(int(trend.sum()), 1, bias=False) if trend.any() else None
        if self.trend is not None:
            nn.init.zeros_(self.trend.weight)  # no trend until the data shows one
        self.lookups = nn.ModuleList(lookups)
        self.embeddings = nn.ModuleList(
            nn.Embedding(int(lk.table.max()) + 1, d) for lk, d in zip(lookups, embedding_dims, strict=True)
        )
        # Numeric columns that also enter bucketed (their value's quantile bin gets an embedding): lets the
        # MLP learn thresholds and per-range interactions that a single standardised input makes slow.
        edges = bucket_edges or {}
        self.bucket_columns = list(edges)
        for j, column in enumerate(self.bucket_columns):
            self.register_buffer(f"bucket_edges_{j}", edges[column].float())
        self.bucket_embeddings = nn.ModuleList(nn.Embedding(len(edges[c]) + 1, bucket_dim) for c in self.bucket_columns)
        layers: list[nn.Module] = []
        width = len(self.mlp_columns) + sum(embedding_dims) + bucket_dim * len(self.bucket_columns)
        for h in hidden:
            linear = nn.Linear(width, h)
            # ReLU keeps PyTorch's default (He-style, fan-in) initialisation, as the committed models were
            # trained; sigmoid gets Glorot's, the scheme made for saturating units.
            if activation == "relu":
                layers += [linear, nn.ReLU()]
            elif activation == "sigmoid":
                nn.init.xavier_uniform_(linear.weight, gain=nn.init.calculate_gain("sigmoid"))
                nn.init.zeros_(linear.bias)
                layers += [linear, nn.Sigmoid()]
            else:
                raise ValueError(f"activation must be relu or sigmoid, got {activation!r}")
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)
        self.output = output
        self.target_shift = target_shift
        self.target_scale = target_scale

    def exported(self) -> nn.Module:
        """What ONNX export traces: the categorical columns through one StackedLookup, the same answers
        (tests/training/test_stacked_lookup.py) from a graph that no longer grows with each column."""
        if not len(self.lookups):
            return self.eval()
        codes = StackedLookup(list(self.lookups))
        return Stacked(self.eval(), codes, None, {"codes": StackedMatrices(codes, [e.weight for e in self.embeddings])})

    def raw(
        self, numeric: torch.Tensor, categorical: torch.Tensor, looked: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """The pre-activation output: standardised log price, or the click logit (what training fits).
        `looked`: the columns' embeddings, side by side, already looked up ("codes": exported())."""
        numeric = torch.where(self.log_mask, torch.log1p(numeric.clamp_min(0)), numeric)
        scaled = (numeric - self.num_mean) / self.num_std
        parts = [scaled if self.trend is None else scaled.index_select(1, self.mlp_columns)]
        if looked is not None:
            parts.append(looked["codes"])
        else:
            for i, (lookup, emb) in enumerate(zip(self.lookups, self.embeddings, strict=True)):
                parts.append(emb(lookup(categorical[:, i])))
        for j, (column, emb) in enumerate(zip(self.bucket_columns, self.bucket_embeddings, strict=True)):
            edges = getattr(self, f"bucket_edges_{j}")
            # bin index = number of edges below the value (exports as Greater + ReduceSum)
            parts.append(emb((numeric[:, column : column + 1] > edges).sum(dim=1)))
        out = self.mlp(torch.cat(parts, dim=1))
        return out if self.trend is None else out + self.trend(scaled.index_select(1, self.trend_columns))

    def forward(
        self, numeric: torch.Tensor, categorical: torch.Tensor, looked: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        y = self.raw(numeric, categorical, looked)
        if self.output == "log_dollars":
            return torch.exp(y * self.target_scale + self.target_shift)
        if self.output == "linear":
            return y * self.target_scale + self.target_shift
        return torch.sigmoid(y)


def _conv_bn(c_in: int, c_out: int, pool: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(c, c), _conv_bn(c, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNet9(nn.Module):
    """The ResNet-9 of the DAWNBench CIFAR-10 entries (Page, 2018), `width` channels at the stem."""

    def __init__(self, num_classes: int, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv_bn(3, w),
            _conv_bn(w, 2 * w, pool=True),
            Residual(2 * w),
            _conv_bn(2 * w, 4 * w, pool=True),
            _conv_bn(4 * w, 8 * w, pool=True),
            Residual(8 * w),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(8 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)) * 0.125  # the 0.125 logit scale keeps early softmax soft


class ImageClassifier(nn.Module):
    """uint8 RGB photos [N, H, W, 3] -> class probabilities [N, C]; normalisation inside the graph."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.net = net
        # Folding /255 into mean and std: (x/255 - m)/s == (x - 255m)/(255s).
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0)

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).float()
        return (x - self.mean) / self.std

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(self.normalise(image)), dim=1)


class ClickNet(nn.Module):
    """A click model for logs of many high-cardinality IDs: x0 = [scaled numbers, an embedding of each
    number's quantile bin, an embedding per code column] into a ReLU MLP, optionally beside DCN-v2 cross
    layers x_{l+1} = x0 * (W x_l + b) + x_l (Wang et al., 2021). With `wide`, a logistic regression on
    the same inputs is added to the logit (Cheng et al., 2016, wide & deep): a weight per code, per
    number's bin and per scaled number, started at zero. The network then holds the logistic model the
    bar compares it with, and on a small log, where the MLP has little to learn from, it is that model
    (docs/clicklogs.md#the-model). Takes the service's tensors: numeric float32 [N, F] raw, categorical
    int64 [N, C] codes."""

    def __init__(
        self,
        num_mean: torch.Tensor,
        num_std: torch.Tensor,
        log_mask: torch.Tensor,
        lookups: list[CodeLookup],
        embedding_dims: list[int],
        hidden: tuple[int, ...],
        cross_layers: int = 0,
        bin_edges: list[torch.Tensor] | None = None,
        bin_dim: int = 8,
        wide: bool = False,
        deep_rows: list[torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("log_mask", log_mask)
        self.register_buffer("num_mean", num_mean.float())
        self.register_buffer("num_std", num_std.float())
        self.lookups = nn.ModuleList(lookups)
        wide_rows = [int(lk.table.max()) + 1 for lk in lookups]
        # The wide part may know more codes than the deep one (every code the training rows hold, where
        # the embeddings keep their own rows for frequent ones): deep_rows maps a lookup's row to an
        # embedding's (0: the shared row of rare and unseen codes).
        self.deep_maps = deep_rows is not None
        for j, d in enumerate(deep_rows or []):
            self.register_buffer(f"deep_rows_{j}", d.long())
        rows = [int(d.max()) + 1 for d in deep_rows] if deep_rows is not None else wide_rows
        # PyTorch's N(0, 1) start, on purpose: with std 0.01 the MLP found the feature interactions on
        # one seed in three and stalled near the logistic regression on the others (AUC 0.752 vs 0.763).
        self.embeddings = nn.ModuleList(nn.Embedding(r, d) for r, d in zip(rows, embedding_dims, strict=True))
        # Each number also enters as its quantile bin's embedding: an age band, a count's order of magnitude.
        edges = bin_edges or []
        for j, e in enumerate(edges):
            self.register_buffer(f"bin_edges_{j}", e.float())
        self.bins = nn.ModuleList(nn.Embedding(len(e) + 1, bin_dim) for e in edges)
        width = len(num_mean) + sum(embedding_dims) + bin_dim * len(edges)
        self.cross = nn.ModuleList(nn.Linear(width, width) for _ in range(cross_layers))
        layers: list[nn.Module] = []
        deep = width
        for h in hidden:
            layers += [nn.Linear(deep, h), nn.ReLU()]
            deep = h
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(width * bool(cross_layers) + deep, 1)
        self.wide = wide
        self.wide_numbers: nn.Linear | None = None
        if wide:  # one weight per row of each embedding above, and per scaled number: zero at the start
            self.wide_codes = nn.ModuleList(nn.Embedding(r, 1) for r in wide_rows)
            self.wide_bins = nn.ModuleList(nn.Embedding(len(e) + 1, 1) for e in edges)
            # (none without numbers: a parameter no answer uses stops DistributedDataParallel)
            self.wide_numbers = nn.Linear(len(num_mean), 1, bias=False) if len(num_mean) else None
            for p in self.wide_parameters():
                nn.init.zeros_(p)

    def exported(self) -> nn.Module:
        """What ONNX export traces: the code columns through one StackedLookup, whose rows pick the deep
        embeddings and the wide weights from one table each, and the numbers' bins through one
        StackedBins likewise: the same answers from a graph that no longer grows with each column."""
        matrices: dict[str, StackedMatrices] = {}
        codes = StackedLookup(list(self.lookups)) if len(self.lookups) else None
        if codes is not None:
            maps = [getattr(self, f"deep_rows_{j}") for j in range(len(self.lookups))] if self.deep_maps else None
            matrices["codes"] = StackedMatrices(codes, [e.weight for e in self.embeddings], maps)
            if self.wide:
                matrices["wide_codes"] = StackedMatrices(codes, [e.weight for e in self.wide_codes])
        bins = StackedBins([getattr(self, f"bin_edges_{j}") for j in range(len(self.bins))]) if len(self.bins) else None
        if bins is not None:
            matrices["bins"] = StackedMatrices(bins, [e.weight for e in self.bins])
            if self.wide:
                matrices["wide_bins"] = StackedMatrices(bins, [e.weight for e in self.wide_bins])
        return Stacked(self.eval(), codes, bins, matrices)

    def wide_parameters(self) -> list[nn.Parameter]:
        numbers = [] if self.wide_numbers is None else list(self.wide_numbers.parameters())
        return [*self.wide_codes.parameters(), *self.wide_bins.parameters(), *numbers]

    def raw(self, numeric: torch.Tensor, categorical: torch.Tensor,
            looked: dict[str, torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
        """The click logit (what training fits). `looked`: the code columns' deep embeddings and wide
        weights, and the numbers' bins' ("codes", "wide_codes", "bins", "wide_bins"), each side by side,
        already looked up (exported())."""
        looked = looked or {}
        if "codes" in looked:
            parts = [looked["codes"]]
            wide = [looked["wide_codes"]] if self.wide else []
        else:
            rows = [lookup(column) for lookup, column in zip(self.lookups, categorical.unbind(1), strict=True)]
            deep = [getattr(self, f"deep_rows_{j}")[r] for j, r in enumerate(rows)] if self.deep_maps else rows
            parts = [emb(r) for emb, r in zip(self.embeddings, deep, strict=True)]
            wide = [emb(r) for emb, r in zip(self.wide_codes, rows, strict=True)] if self.wide else []
        if len(self.num_mean):  # a log with numbers (ONNX cannot take the empty arithmetic of one without)
            # bin = edges below the raw value (Greater + ReduceSum): before the log, whose last bit
            # onnxruntime and torch may round apart, moving a value that sits on an edge
            if "bins" in looked:
                parts.append(looked["bins"])
                wide += [looked["wide_bins"]] if self.wide else []
            else:
                for j, emb in enumerate(self.bins):
                    b = (numeric[:, j : j + 1] > getattr(self, f"bin_edges_{j}")).sum(dim=1)
                    parts.append(emb(b))
                    if self.wide:
                        wide.append(self.wide_bins[j](b))
            numeric = torch.where(self.log_mask, torch.log1p(numeric.clamp_min(0)), numeric)
            scaled = (numeric - self.num_mean) / self.num_std
            parts.insert(0, scaled)
            if self.wide_numbers is not None:
                wide.append(self.wide_numbers(scaled))
        x0 = torch.cat(parts, dim=1)
        out = [self.mlp(x0)]
        if len(self.cross):
            x = x0
            for layer in self.cross:
                x = x0 * layer(x) + x
            out.append(x)
        logit = self.head(torch.cat(out, dim=1))
        if wide:
            logit = logit + torch.cat(wide, dim=1).sum(dim=1, keepdim=True)
        # Without numbers, a sum over no columns (0) keeps the graph's numeric [N, 0] input, which the service sends.
        return logit if len(self.num_mean) else logit + numeric.sum(dim=1, keepdim=True)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor,
                looked: dict[str, torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
        return torch.sigmoid(self.raw(numeric, categorical, looked))


class Logits(nn.Module):
    """A model's `raw` as its forward: what DistributedDataParallel wraps, so its gradient hooks run."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        return self.model.raw(numeric, categorical)
