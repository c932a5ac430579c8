"""Slow, obviously correct references in matrix form (float64, one sample at a time).

Every layer is turned into an explicit matrix ``M`` of shape ``(D_out, D_in)`` acting on flattened
(channel-major) vectors - convolutions and average pooling by explicit loops over output positions
and kernel taps - and every rule is written as ``R_i = sum_j n_ij R_j / sum_i' n_i'j``. Nothing
here imports learnroot or zennit.
"""
from __future__ import annotations

import math

import torch
from torch import nn

EPS_DEFAULT = 1e-6


# ----------------------------------------------------------------------------------------------
# layers as matrices


def conv_matrix(weight: torch.Tensor, in_shape, stride=1, padding=0):
    """Explicit matrix of a 2-D convolution (no bias), and its connection pattern.

    Returns ``(M, support, out_shape)`` with ``M[(co, oh, ow), (ci, h, w)] = weight[co, ci, i, j]``
    where ``h = oh * stride - padding + i`` and ``w = ow * stride - padding + j`` lie inside.
    """
    c_out, c_in, kh, kw = weight.shape
    _, height, width = in_shape
    h_out = (height + 2 * padding - kh) // stride + 1
    w_out = (width + 2 * padding - kw) // stride + 1
    matrix = torch.zeros(c_out * h_out * w_out, c_in * height * width, dtype=torch.float64)
    support = torch.zeros_like(matrix, dtype=torch.bool)
    for co in range(c_out):
        for oh in range(h_out):
            for ow in range(w_out):
                row = (co * h_out + oh) * w_out + ow
                for ci in range(c_in):
                    for i in range(kh):
                        for j in range(kw):
                            h, w = oh * stride - padding + i, ow * stride - padding + j
                            if 0 <= h < height and 0 <= w < width:
                                col = (ci * height + h) * width + w
                                matrix[row, col] += float(weight[co, ci, i, j])
                                support[row, col] = True
    return matrix, support, (c_out, h_out, w_out)


def avgpool_matrix(in_shape, kernel, stride):
    """Explicit matrix of a 2-D average pooling (no padding)."""
    channels, height, width = in_shape
    h_out, w_out = (height - kernel) // stride + 1, (width - kernel) // stride + 1
    matrix = torch.zeros(channels * h_out * w_out, channels * height * width, dtype=torch.float64)
    for c in range(channels):
        for oh in range(h_out):
            for ow in range(w_out):
                for i in range(kernel):
                    for j in range(kernel):
                        h, w = oh * stride + i, ow * stride + j
                        matrix[(c * h_out + oh) * w_out + ow, (c * height + h) * width + w] = 1.0 / kernel ** 2
    return matrix, (channels, h_out, w_out)


def maxpool_winners(a: torch.Tensor, in_shape, kernel, stride):
    """For each output of a max pooling, the flat index of its input winner (first maximum in
    row-major window order) and the pooled values."""
    channels, height, width = in_shape
    h_out, w_out = (height - kernel) // stride + 1, (width - kernel) // stride + 1
    winners, values = [], []
    for c in range(channels):
        for oh in range(h_out):
            for ow in range(w_out):
                best, best_index = -math.inf, None
                for i in range(kernel):
                    for j in range(kernel):
                        index = (c * height + oh * stride + i) * width + ow * stride + j
                        if float(a[index]) > best:
                            best, best_index = float(a[index]), index
                winners.append(best_index)
                values.append(best)
    return winners, torch.tensor(values, dtype=torch.float64), (channels, h_out, w_out)


# ----------------------------------------------------------------------------------------------
# rules, one sample: x (D_in,), R (D_out,), M (D_out, D_in)


def stab(z, eps):
    """zennit's convention: add eps with the sign of z, +eps for z == 0."""
    return z + eps * torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))


def redistribute(numerator: torch.Tensor, R: torch.Tensor, eps: float) -> torch.Tensor:
    """``R_i = sum_j n_ji R_j / stab(sum_i' n_ji')`` for a contribution matrix ``n`` (D_out, D_in)."""
    denominator = stab(numerator.sum(dim=1), eps)
    return (numerator * (R / denominator)[:, None]).sum(dim=0)


def rule_epsilon(M, x, R, eps):
    return redistribute(M * x[None, :], R, eps)


def rule_zplus(M, x, R, eps, fallback=True):
    # zennit's generalised z+: positive inputs through w+, negative inputs through w-; with ``fallback``
    # (learnroot's z+) the denominator, a sum of non-negative terms, is not stabilised where it is positive,
    # and a neuron without any positive contribution (its row sums to exactly 0) spreads its R by w^2
    numerator = M.clamp(min=0) * x.clamp(min=0)[None, :] + M.clamp(max=0) * x.clamp(max=0)[None, :]
    z = numerator.sum(dim=1)
    if fallback:
        out = (numerator * torch.where(z > 0, R / torch.where(z > 0, z, torch.ones_like(z)), 0 * z)[:, None]).sum(0)
    else:
        out = redistribute(numerator, R, eps)
    empty = z == 0
    if fallback and bool(empty.any()):
        out = out + wsquare_exact(M, R * empty)
    return out


def rule_proportional(M, x, R):
    """Sums and poolings (non-negative weights ``M``): ``R_i = sum_j M_ji x_i R_j / z_j`` without a stabiliser;
    an output with ``z_j = 0`` passes nothing on."""
    z = M @ x
    nonzero = z != 0
    return x * (M.T @ torch.where(nonzero, R / torch.where(nonzero, z, torch.ones_like(z)), 0 * R))


def rule_gamma(M, x, R, gamma, eps):
    # zennit's generalised gamma rule; for x >= 0 it is w + gamma w+ (z > 0) or w + gamma w- (z < 0)
    z = M @ x
    xp, xn = x.clamp(min=0)[None, :], x.clamp(max=0)[None, :]
    positive = (M + gamma * M.clamp(min=0)) * xp + (M + gamma * M.clamp(max=0)) * xn
    negative = (M + gamma * M.clamp(max=0)) * xp + (M + gamma * M.clamp(min=0)) * xn
    out = torch.zeros_like(x)
    out += redistribute(positive, R * (z > 0), eps)
    out += redistribute(negative, R * (z < 0), eps)
    return out


def rule_zbox(M, x, R, low, high, eps):
    numerator = M * x[None, :] - M.clamp(min=0) * low[None, :] - M.clamp(max=0) * high[None, :]
    return redistribute(numerator, R, eps)


def rule_alpha_beta(M, x, R, alpha, beta, eps):
    # zennit's alpha-beta: positive contributions (x+ w+ + x- w-) and negative ones (x+ w- + x- w+) normalised
    # separately, weighted alpha and -beta
    xp, xn = x.clamp(min=0)[None, :], x.clamp(max=0)[None, :]
    positive = M.clamp(min=0) * xp + M.clamp(max=0) * xn
    negative = M.clamp(max=0) * xp + M.clamp(min=0) * xn
    return alpha * redistribute(positive, R, eps) - beta * redistribute(negative, R, eps)


def rule_wsquare(M, R, eps):
    return redistribute(M ** 2, R, eps)


def wsquare_exact(M, R):
    """w^2 without a stabiliser (the z+ fallback): ``R_i = sum_j w_ij^2 R_j / sum_i' w_i'j^2``; all-zero rows keep R."""
    norm = (M ** 2).sum(dim=1)
    return (M ** 2 * torch.where(norm > 0, R / torch.where(norm > 0, norm, torch.ones_like(norm)), 0 * R)[:, None]).sum(0)


def rule_flat(support, R, eps):
    return redistribute(support.to(torch.float64), R, eps)


# ----------------------------------------------------------------------------------------------
# the learned root, one sample


def _groups(shape):
    """Softmax groups: a vector is one group, a (C, H, W) map one group per channel."""
    if len(shape) == 1:
        return [list(range(shape[0]))]
    size = int(torch.tensor(shape[1:]).prod())
    return [list(range(c * size, (c + 1) * size)) for c in range(shape[0])]


def softmax_groups(v, shape):
    out = torch.empty_like(v)
    for group in _groups(shape):
        e = torch.exp(v[group] - v[group].max())
        out[group] = e / e.sum()
    return out


def reflect(index, n):
    if index < 0:
        return -index
    if index >= n:
        return 2 * (n - 1) - index
    return index


def ssim_reference(p, q, shape, data_range):
    """SSIM map (flat) between two flat maps of ``shape`` ((C, H, W) or (F,) as (1, 1, F)):
    Gaussian window of the largest odd size <= min(11, side) with sigma 1.5 * size / 11, reflect
    padding, constants (0.01 L)^2 and (0.03 L)^2. Sums over window offsets, explicit indices."""
    if len(shape) == 1:
        shape = (1, 1, shape[0])
    channels, height, width = shape
    pm, qm = p.reshape(shape), q.reshape(shape)

    def window(n):
        k = min(11, n if n % 2 == 1 else n - 1)
        sigma = 1.5 * k / 11
        g = [math.exp(-((a - k // 2) ** 2) / (2 * sigma ** 2)) for a in range(k)]
        total = sum(g)
        return [value / total for value in g]

    gh, gw = window(height), window(width)
    rows = [[reflect(y + a - len(gh) // 2, height) for y in range(height)] for a in range(len(gh))]
    cols = [[reflect(x + b - len(gw) // 2, width) for x in range(width)] for b in range(len(gw))]

    def blur(m):
        total = torch.zeros_like(m)
        for a, wa in enumerate(gh):
            for b, wb in enumerate(gw):
                total = total + wa * wb * m[:, rows[a]][:, :, cols[b]]
        return total

    mu_p, mu_q = blur(pm), blur(qm)
    var_p = blur(pm * pm) - mu_p ** 2
    var_q = blur(qm * qm) - mu_q ** 2
    cov = blur(pm * qm) - mu_p * mu_q
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return (((2 * mu_p * mu_q + c1) * (2 * cov + c2)) / ((mu_p ** 2 + mu_q ** 2 + c1) * (var_p + var_q + c2))).flatten()


def loss_gradient(z, r, shape, loss, softmax=False, paper_quirks=False):
    """Per-sample loss and its gradient with respect to the response ``z`` (flat, D_out).

    mse, l1, hinge, cosine, kl: analytic (through the softmax Jacobian ``diag(p) - p p^T`` per group);
    ssim: autograd through :func:`ssim_reference`.
    """
    n = z.numel()
    if loss == "cosine":  # 1 - <z, r> / (|z| |r|): d/dz = -(u / |z| - <z, u> z / |z|^3), u = r / |r|
        u = r / r.norm()
        norm = z.norm()
        return float(1 - (z @ u) / norm), -(u / norm - (z @ u) * z / norm ** 3)
    if loss == "kl":  # sum pi log pi - sum pi log(p + f), p = z+ / sum z+, f = 1e-6 / n
        pi = r.abs() / r.abs().sum()
        positive = z.clamp(min=0)
        total = positive.sum()
        p, f = positive / total, 1e-6 / n
        value = float(sum(float(a) * math.log(float(a)) for a in pi if a > 0) - (pi * torch.log(p + f)).sum())
        weights = pi / (p + f)
        gradient = -(weights - (weights * p).sum()) / total * (z > 0)
        return value, gradient
    if loss == "ssim":
        zv = z.clone().requires_grad_(True)
        p = softmax_groups(zv, shape) if softmax else zv
        q = softmax_groups(r, shape) if softmax else r
        data_range = max(float(q.max() - q.min()), torch.finfo(torch.float64).eps)
        s = ssim_reference(p, q, shape, data_range)
        value = s.mean() if paper_quirks else (1 - s).sum()
        gradient, = torch.autograd.grad(value, zv)
        return float(value.detach()), gradient
    p = softmax_groups(z, shape) if softmax else z
    q = softmax_groups(r, shape) if softmax else r
    if loss == "mse":
        terms, dp = (p - q) ** 2, 2 * (p - q)
    elif loss == "l1":
        terms, dp = (p - q).abs(), torch.sign(p - q)
    elif loss == "hinge":
        target = q if paper_quirks else torch.sign(q)
        terms, dp = torch.zeros_like(p), torch.zeros_like(p)
        for i in range(n):
            t, v = float(target[i]), float(p[i])
            if not paper_quirks and t == 0:
                continue
            hinge = max(0.0, 1.0 - v)
            d_hinge = -1.0 if v < 1.0 else 0.0
            if t == 1.0:
                terms[i], dp[i] = v, 1.0
            elif t == -1.0:
                terms[i], dp[i] = hinge, d_hinge
            else:  # PyTorch: targets that are neither 1 nor -1 give x + max(0, margin - x)
                terms[i], dp[i] = v + hinge, 1.0 + d_hinge
    else:
        raise ValueError(loss)
    value = terms.sum()
    if paper_quirks:
        value, dp = value / n, dp / n
    if softmax:
        dz = torch.empty_like(z)
        for group in _groups(shape):
            pg, dg = p[group], dp[group]
            dz[group] = pg * (dg - (dg * pg).sum())
        dp = dz
    return float(value), dp


def learned_root(M, x, R, out_shape, *, loss="mse", steps=5, lr=1.0, clip=1.0, weights="plus", project=True,
                 normalise=True, box=None, eps=EPS_DEFAULT, softmax=False, paper_quirks=False, nan_at=None,
                 step="additive", exact=False):
    """The learned root of one sample: returns ``(R_in, signal, failed)``.

    ``exact`` (learnroot's rule with the w^2 fallback, ``w+``, no box, normalised): no stabiliser; a neuron the
    signal does not respond to goes through the start, one the start does not respond to either by w^2.

    ``step``: ``additive`` (``s <- P(s - lr clip(g))``) or ``relative`` (``s = m x``,
    ``m <- clamp(m - lr g_m / max|g_m|, 0, 1)`` with ``g_m = x g``). ``nan_at``: a step index at which
    the loss is made NaN (fallback test).
    """
    W = M.clamp(min=0) if weights == "plus" else M
    if box is None:
        low, high = torch.minimum(x, torch.zeros_like(x)), torch.maximum(x, torch.zeros_like(x))
    else:
        low, high = x - box[1], x - box[0]
    s = x.clone()
    if project:
        s = torch.minimum(torch.maximum(s, low), high)
    if step == "relative":
        s = x.clone()
    start = s.clone()
    failed = False
    m = torch.ones_like(x)
    for index in range(steps):
        if failed:
            break
        value, dz = loss_gradient(W @ s, R, out_shape, loss, softmax, paper_quirks)
        if nan_at is not None and index == nan_at:
            value = float("nan")
        g = W.T @ dz
        if step == "relative":
            g_m = g * x
            m = (m - lr * g_m / g_m.abs().max()).clamp(0, 1)
            candidate = m * x
        else:
            if clip > 0:
                g = g.clamp(-clip, clip)
            candidate = s - lr * g
            if project:
                candidate = torch.minimum(torch.maximum(candidate, low), high)
        if not math.isfinite(value) or not bool(torch.isfinite(candidate).all()):
            failed, s = True, start.clone()
        else:
            s = candidate
    if not normalise:
        return s * (W.T @ (R / stab(W @ x, eps))), s, failed
    z_s, z_0 = W @ s, W @ start
    if exact and weights == "plus" and box is None:
        positive = lambda z: torch.where(z > 0, z, torch.ones_like(z))
        out = s * (W.T @ torch.where(z_s > 0, R / positive(z_s), 0 * R))
        rescued = R * (z_s <= 0)
        out = out + start * (W.T @ torch.where(z_0 > 0, rescued / positive(z_0), 0 * R))
        return out + wsquare_exact(M, R * (z_0 <= 0)), s, failed
    excess = (eps / (z_s.abs() + eps) - eps / (z_0.abs() + eps)).clamp(min=0)
    rescued = R * excess
    out = s * (W.T @ (R / stab(z_s, eps)))
    if bool((rescued != 0).any()):
        out = out + start * (W.T @ (rescued / stab(z_0, eps)))
    return out, s, failed


# ----------------------------------------------------------------------------------------------
# whole networks: nn.Sequential of Conv2d / Linear / ReLU / MaxPool2d / AvgPool2d / Flatten


def _ints(value):
    return value[0] if isinstance(value, tuple) else value


def network_layers(model: nn.Sequential, in_shape):
    """Matrix form of a bias-free sequential network: a list of dicts (kind, matrix, ...)."""
    layers, shape = [], tuple(in_shape)
    for name, module in model.named_children():
        if isinstance(module, nn.Conv2d):
            M, support, out = conv_matrix(module.weight.detach().double(), shape, _ints(module.stride),
                                          _ints(module.padding))
            layers.append({"kind": "affine", "name": name, "M": M, "support": support, "dense": False,
                           "out_shape": out})
            shape = out
        elif isinstance(module, nn.Linear):
            M = module.weight.detach().double()
            layers.append({"kind": "affine", "name": name, "M": M, "support": torch.ones_like(M, dtype=torch.bool),
                           "dense": True, "out_shape": (M.shape[0],)})
            shape = (M.shape[0],)
        elif isinstance(module, nn.ReLU):
            layers.append({"kind": "relu", "name": name})
        elif isinstance(module, nn.MaxPool2d):
            layers.append({"kind": "maxpool", "name": name, "in_shape": shape, "kernel": _ints(module.kernel_size),
                           "stride": _ints(module.stride)})
            k, s = _ints(module.kernel_size), _ints(module.stride)
            shape = (shape[0], (shape[1] - k) // s + 1, (shape[2] - k) // s + 1)
        elif isinstance(module, nn.AvgPool2d):
            A, out = avgpool_matrix(shape, _ints(module.kernel_size), _ints(module.stride))
            layers.append({"kind": "avgpool", "name": name, "M": A})
            shape = out
        elif isinstance(module, nn.Flatten):
            shape = (int(torch.tensor(shape).prod()),)
        else:
            raise TypeError(type(module))
    return layers


def forward(layers, x):
    """Activations entering each layer (list) and the output, for one flat sample."""
    inputs, a = [], x
    for layer in layers:
        inputs.append(a)
        if layer["kind"] in ("affine", "avgpool"):
            a = layer["M"] @ a
        elif layer["kind"] == "relu":
            a = a.clamp(min=0)
        elif layer["kind"] == "maxpool":
            _, a, _ = maxpool_winners(a, layer["in_shape"], layer["kernel"], layer["stride"])
    return inputs, a


def method_rules(method, n_affine, dense_flags, epsilon=0.25, gamma=0.5, split=(0.33, 0.67), pixel="zb",
                 alpha=2.0, beta=1.0):
    """The rule of each affine layer (forward order) for a method, written out from METHOD.md."""
    hidden = n_affine - 1
    rules = [("pixel", pixel)]
    for index in range(hidden):
        dense = dense_flags[index + 1]
        if method == "lrp_0":
            rules.append(("epsilon", 0.0))
        elif method == "lrp_epsilon":
            rules.append(("epsilon", epsilon))
        elif method == "lrp_gamma":
            rules.append(("gamma", gamma))
        elif method == "lrp_alpha_beta":
            rules.append(("alpha_beta", (alpha, beta)))
        elif method in ("dtd_zplus", "ours"):
            rules.append(("zplus", None))
        elif method == "dtd_zb":
            rules.append(("layerbox", None))
        elif method == "dtd_ww":
            rules.append(("wsquare", None))
        elif method == "dtd_montavon":
            end_gamma, end_epsilon = round(split[0] * hidden), round(split[1] * hidden)
            if dense or index >= end_epsilon:
                rules.append(("epsilon", 0.0))
            elif index < end_gamma:
                rules.append(("gamma", gamma))
            else:
                rules.append(("epsilon", epsilon))
        else:
            raise ValueError(method)
    return rules


def apply_rule(rule, layer, a, R, eps, box, gamma=0.5, epsilon=0.25):
    kind, value = rule
    M = layer["M"]
    if kind == "pixel":
        kind, value = {"zb": ("zbox", None), "zplus": ("zplus", None), "wsquare": ("wsquare", None),
                       "flat": ("flat", None), "epsilon": ("epsilon", epsilon), "gamma": ("gamma", gamma),
                       "alpha_beta": ("alpha_beta", (2.0, 1.0))}[value]
    if kind == "epsilon":
        return rule_epsilon(M, a, R, max(value, eps))
    if kind == "gamma":
        return rule_gamma(M, a, R, value, eps)
    if kind == "zplus":
        return rule_zplus(M, a, R, eps)
    if kind == "alpha_beta":
        return rule_alpha_beta(M, a, R, value[0], value[1], eps)
    if kind == "zbox":
        return rule_zbox(M, a, R, box[0], box[1], eps)
    if kind == "layerbox":
        return rule_zbox(M, a, R, torch.full_like(a, float(a.min())), torch.full_like(a, float(a.max())), eps)
    if kind == "wsquare":
        return rule_wsquare(M, R, eps)
    if kind == "flat":
        return rule_flat(layer["support"], R, eps)
    raise ValueError(kind)


def relevance(layers, x, target, rules, eps=EPS_DEFAULT, box=None, gamma=0.5, epsilon=0.25, learned=None,
              output="logit"):
    """Relevance at the input of one flat sample.

    ``rules``: one per affine layer, forward order (see :func:`method_rules`); ``box``: flat
    ``(low, high)`` of the pixel layer. ``learned``: ``{affine index: keyword arguments of
    learned_root}`` for the layers that use the learned root instead of their rule.
    Returns ``(R_input, [(name, sum R_out, sum R_in)] in backward order)``.
    """
    inputs, logits = forward(layers, x)
    R = torch.zeros_like(logits)
    value = float(logits[target])
    R[target] = {"logit": value, "abs_logit": abs(value), "one": 1.0}[output]
    affine_index = [i for i, layer in enumerate(layers) if layer["kind"] == "affine"]
    learned = learned or {}
    sums = []
    for position in reversed(range(len(layers))):
        layer, a = layers[position], inputs[position]
        before = float(R.sum())
        if layer["kind"] == "affine":
            index = affine_index.index(position)
            if index in learned:  # the attributor's learned root has the w^2 fallback (the default): exact
                R = learned_root(layer["M"], a, R, layer["out_shape"], **{"exact": True, **learned[index]})[0]
            else:
                R = apply_rule(rules[index], layer, a, R, eps, box, gamma, epsilon)
        elif layer["kind"] == "avgpool":
            R = rule_proportional(layer["M"], a, R)
        elif layer["kind"] == "maxpool":
            winners, _, _ = maxpool_winners(a, layer["in_shape"], layer["kernel"], layer["stride"])
            out = torch.zeros_like(a)
            for j, i in enumerate(winners):
                out[i] += R[j]
            R = out
        sums.append((layer["name"], before, float(R.sum())))
    return R, sums


def gradient(layers, x, target):
    """Gradient of logit ``target`` with respect to the flat input, by the chain rule in matrix form."""
    inputs, logits = forward(layers, x)
    g = torch.zeros_like(logits)
    g[target] = 1.0
    for position in reversed(range(len(layers))):
        layer, a = layers[position], inputs[position]
        if layer["kind"] in ("affine", "avgpool"):
            g = layer["M"].T @ g
        elif layer["kind"] == "relu":
            g = g * (a > 0)
        elif layer["kind"] == "maxpool":
            winners, _, _ = maxpool_winners(a, layer["in_shape"], layer["kernel"], layer["stride"])
            out = torch.zeros_like(a)
            for j, i in enumerate(winners):
                out[i] += g[j]
            g = out
    return g


def hinge_embedding(x, y, margin=1.0):
    """PyTorch's hinge-embedding loss, elementwise, as documented plus its handling of other targets."""
    out = torch.zeros_like(x)
    for i in range(x.numel()):
        v, t = float(x.flatten()[i]), float(y.flatten()[i])
        out.view(-1)[i] = (v if t != -1 else 0.0) + (max(0.0, margin - v) if t != 1 else 0.0)
    return out
