"Blocks and models: shapes, state equivalence (one pass == segments == steps), gradients, reset, configs, compile, autocast."
import pytest, torch
from rfwp.utils import assert_close
from rfwp.layers import LAYERS, LayerConfig, make_layer, detach_state, reset_state
from rfwp.models import ModelConfig, SeqModel, count_params

KINDS = ["linear", "delta", "delta_mlp", "delta_delta", "delta_rnn", "delta_lstm", "rdn", "lstm_delta", "lstm", "transformer"]
# (kind, extra LayerConfig fields): every kind, plus a deeper fast net and the LM head scaling
CASES = [(k, {}) for k in KINDS] + [("delta_mlp", dict(fast_depth=2)), ("delta", dict(scale_heads=True))]
IDS = [k + "".join(f"-{a}{b}" for a, b in kw.items()) for k, kw in CASES]
d_model, H = 32, 4

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    "These tensors are tiny, so every op is dispatch-bound: one thread avoids OpenMP spin-waits when other jobs share the cores (7x faster here)."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

def block(kind, seed=0, dtype=torch.float64, **kw):
    torch.manual_seed(seed)
    return make_layer(kind, d_model, H, dropout=0.0, **kw).to(dtype).eval()

def rand_x(B=2, T=20, dtype=torch.float64, seed=1):
    return torch.randn(B, T, d_model, dtype=dtype, generator=torch.Generator().manual_seed(seed))

def floats(state): return [s for s in state if s.is_floating_point()]

def test_registry():
    assert list(LAYERS) == KINDS

@pytest.mark.parametrize("kind,kw", CASES, ids=IDS)
def test_shapes_and_state(kind, kw):
    blk = block(kind, dtype=torch.float32, **kw)
    x = rand_x(B=3, T=5, dtype=torch.float32)
    y, st = blk(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert isinstance(st, tuple) and len(st) > 0
    for s in st: assert isinstance(s, torch.Tensor) and s.shape[0] == 3, (kind, s.shape)

@pytest.mark.parametrize("kind,kw", CASES, ids=IDS)
def test_one_pass_segments_steps(kind, kw):
    "float64, no dropout: one pass == two segments with the carried state == 20 single steps (outputs and final state)."
    blk, x, T = block(kind, **kw), rand_x(), 20
    with torch.no_grad():
        y, s = blk(x)
        y1, s1 = blk(x[:, :7]); y2, s2 = blk(x[:, 7:], s1)
        st, ys = None, []
        for t in range(T):
            yt, st = blk(x[:, t:t + 1], st); ys.append(yt)
    assert_close(f"{kind} segments", y, torch.cat([y1, y2], 1), 1e-10)
    assert_close(f"{kind} steps", y, torch.cat(ys, 1), 1e-10)
    assert len(s) == len(s2) == len(st)
    for i, (a, b, c) in enumerate(zip(floats(s), floats(s2), floats(st))):
        assert_close(f"{kind} state[{i}] segments", a, b, 1e-10)
        assert_close(f"{kind} state[{i}] steps", a, c, 1e-10)

@pytest.mark.parametrize("kind,kw", CASES, ids=IDS)
def test_gradients(kind, kw):
    "Every parameter gets a finite, non-zero gradient; backprop through a carried (non-detached) state matches one pass."
    blk, x = block(kind, **kw), rand_x(T=10)
    g = torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(2))
    (blk(x)[0] * g).sum().backward()
    ref = {n: p.grad.clone() for n, p in blk.named_parameters() if p.grad is not None}
    for n, p in blk.named_parameters():
        assert n in ref, f"{kind}: parameter {n} got no gradient"
        assert torch.isfinite(ref[n]).all() and ref[n].abs().sum() > 0, f"{kind}: gradient of {n} is not finite / all zero"
    blk.zero_grad()
    y1, s = blk(x[:, :4]); y2, _ = blk(x[:, 4:], s)
    (torch.cat([y1, y2], 1) * g).sum().backward()
    for n, p in blk.named_parameters(): assert_close(f"{kind} grad {n} through state", ref[n], p.grad, 1e-9)

@pytest.mark.parametrize("kind", [k for k in KINDS if k not in ("lstm", "transformer")])
def test_impls_agree(kind):
    "The block passes `impl` to its op: the naive reference and the fast path give the same block output."
    x = rand_x(T=12)
    with torch.no_grad():
        y_ref, s_ref = block(kind, impl="naive")(x)
        y, s = block(kind, impl="torch")(x)
    assert_close(f"{kind} naive vs torch", y_ref, y, 1e-10)
    for i, (a, b) in enumerate(zip(s_ref, s)): assert_close(f"{kind} state[{i}]", a, b, 1e-10)

@pytest.mark.parametrize("kind", KINDS)
def test_reset_state(kind):
    "reset_state zeroes exactly the masked batch elements, and a reset element then behaves as a fresh start."
    blk, x = block(kind), rand_x(B=3, T=6)
    with torch.no_grad():
        _, s = blk(x)
        mask = torch.tensor([False, True, False])
        r = reset_state(s, mask)
        for a, b in zip(s, r):
            assert a.shape == b.shape and a.dtype == b.dtype
            assert not b[1].any(), f"{kind}: masked element not zeroed"
            assert torch.equal(a[[0, 2]], b[[0, 2]]), f"{kind}: unmasked elements changed"
        y_reset, _ = blk(x, r); y_fresh, _ = blk(x); y_cont, _ = blk(x, s)
    assert_close(f"{kind} reset == fresh", y_fresh[1], y_reset[1], 1e-12)
    assert_close(f"{kind} others continue", y_cont[[0, 2]], y_reset[[0, 2]], 1e-12)
    with pytest.raises(ValueError, match="batch size 3"): reset_state(s, torch.tensor([True, False]))

def test_detach_state():
    blk = make_layer("delta_rnn", d_model, H)
    _, s = blk(rand_x(T=3, dtype=torch.float32))
    assert any(t.requires_grad for t in s)
    d = detach_state([s, s])
    assert isinstance(d, list) and not any(t.requires_grad for st in d for t in st)
    assert detach_state(None) is None

def test_bad_configs():
    with pytest.raises(ValueError, match="unknown kind 'delta_gru'; valid kinds: linear, delta, delta_mlp"): make_layer("delta_gru", 32, 4)
    with pytest.raises(ValueError, match="d_model=30 is not divisible by n_heads=4"): make_layer("delta", 30, 4)
    with pytest.raises(ValueError, match="dropout"): make_layer("delta", 32, 4, dropout=1.5)
    with pytest.raises(ValueError, match="fast_depth"): make_layer("delta_mlp", 32, 4, fast_depth=0)
    with pytest.raises(ValueError, match="unknown impl"): make_layer("delta", 32, 4, impl="cuda")
    with pytest.raises(TypeError): make_layer("delta", 32, 4, n_layers=3)
    assert LayerConfig("delta", 32, 4).ff_dim == 128
    with pytest.raises(ValueError, match=r"`x` must have shape \(B, T, d_model=32\)"): make_layer("delta", 32, 4)(torch.randn(2, 5, 16))
    with pytest.raises(ValueError, match="vocab_size"): ModelConfig("delta")
    with pytest.raises(ValueError, match="d_model=100 is not divisible by n_heads=16"): ModelConfig(vocab_size=5, d_model=100)
    with pytest.raises(ValueError, match="tie_embeddings"): ModelConfig(vocab_size=5, n_out=3, tie_embeddings=True)
    with pytest.raises(ValueError, match="unknown keys"): ModelConfig.from_dict({"kind": "delta", "vocab_size": 5, "n_head": 2})

def test_autocast_bf16():
    "Forward + backward under CPU bf16 autocast, two segments with the carried state, for every kind: finite, fast state in float32."
    torch.manual_seed(0)
    for kind in KINDS:
        blk = make_layer(kind, d_model, H, dropout=0.0)
        x = rand_x(T=8, dtype=torch.float32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y1, s = blk(x[:, :5]); y2, s = blk(x[:, 5:], s)
            loss = (torch.cat([y1, y2], 1).float() ** 2).mean()
        loss.backward()
        assert torch.isfinite(loss), kind
        for n, p in blk.named_parameters(): assert p.grad is not None and torch.isfinite(p.grad).all(), f"{kind}: {n}"
        if kind not in ("lstm", "transformer"): assert s[-1].dtype == torch.float32, f"{kind}: fast state in {s[-1].dtype}"

def test_torch_compile():
    "A Delta Net block traced by torch.compile matches eager, forward and backward. aot_eager: inductor also matches but its cold C++ build takes ~50 s on 2 CPU cores."
    torch._dynamo.reset()
    blk = block("delta", dtype=torch.float32)
    cblk = torch.compile(blk, backend="aot_eager")
    x = rand_x(T=12, dtype=torch.float32)
    y, (S,) = blk(x); yc, (Sc,) = cblk(x)
    assert_close("compiled y", y, yc, 1e-6); assert_close("compiled S", S, Sc, 1e-6)
    y.sum().backward(); g = blk.slow.weight.grad.clone(); blk.zero_grad()
    yc.sum().backward(); assert_close("compiled grad", g, blk.slow.weight.grad, 1e-5)

# ---- rfwp.models

@pytest.mark.parametrize("kind", ["delta", "rdn", "transformer", "lstm"])
def test_model_segments(kind):
    torch.manual_seed(0)
    m = SeqModel(ModelConfig(kind, n_layers=2, d_model=d_model, n_heads=H, vocab_size=11, n_out=7, dropout=0.0)).double().eval()
    tok = torch.randint(0, 11, (2, 12))
    with torch.no_grad():
        y, s = m(tok)
        y1, s1 = m(tok[:, :5]); y2, s2 = m(tok[:, 5:], s1)
        st, ys = None, []
        for t in range(12):
            yt, st = m(tok[:, t:t + 1], st); ys.append(yt)
    assert y.shape == (2, 12, 7) and isinstance(s, list) and len(s) == 2
    assert_close(f"{kind} model segments", y, torch.cat([y1, y2], 1), 1e-10)
    assert_close(f"{kind} model steps", y, torch.cat(ys, 1), 1e-10)

@pytest.mark.parametrize("kind", KINDS)
def test_model_reset(kind):
    "At model level too, a reset batch element behaves as a fresh start (for the Transformer: positions restart at 0)."
    torch.manual_seed(0)
    m = SeqModel(ModelConfig(kind, n_layers=2, d_model=d_model, n_heads=H, vocab_size=11, dropout=0.0)).double().eval()
    tok = torch.randint(0, 11, (3, 6))
    with torch.no_grad():
        _, s = m(tok)
        y_reset, _ = m(tok, reset_state(s, torch.tensor([False, True, False]))); y_fresh, _ = m(tok)
    assert_close(f"{kind} model reset == fresh", y_fresh[1], y_reset[1], 1e-12)

def test_model_config_roundtrip_and_tie():
    cfg = ModelConfig("delta_mlp", n_layers=2, d_model=d_model, n_heads=H, vocab_size=50, fast_depth=2, scale_heads=True)
    assert cfg.n_out == 50 and ModelConfig.from_dict(cfg.to_dict()) == cfg
    m = SeqModel(cfg)
    m2 = SeqModel(ModelConfig.from_dict(cfg.to_dict())); m2.load_state_dict(m.state_dict())
    tok = torch.randint(0, 50, (2, 6)); m.eval(); m2.eval()
    assert torch.equal(m(tok)[0], m2(tok)[0])
    t = SeqModel(ModelConfig("delta", n_layers=2, d_model=d_model, n_heads=H, vocab_size=50, tie_embeddings=True))
    assert t.head.weight is t.embed.weight and m.num_params() == count_params(m)
    u = SeqModel(ModelConfig("delta", n_layers=2, d_model=d_model, n_heads=H, vocab_size=50))
    assert u.num_params() - t.num_params() == 50 * d_model
    with pytest.raises(ValueError, match="integer tensor"): m(tok.float())
    with pytest.raises(ValueError, match="state"): m(tok, [None])

@pytest.mark.parametrize("kind,kw", CASES, ids=IDS)
def test_empty_segment(kind, kw):
    "A (B, 0, d_model) input: an empty output, the state unchanged (zeros, or an empty cache, from None), gradients through."
    blk = block(kind, **kw)
    x = rand_x(B=3, T=0)
    y, st0 = blk(x)
    assert y.shape == (3, 0, d_model) and isinstance(st0, tuple)
    _, ref = block(kind, **kw)(rand_x(B=3, T=1))                       # a state of the right shapes
    assert [s.shape[0] for s in st0] == [3] * len(ref)
    for s, r in zip(st0, ref):
        if kind != "transformer": assert s.shape == r.shape and s.dtype == r.dtype and not s.any(), (kind, s.shape)
    st = tuple(s.detach().clone().requires_grad_() if s.is_floating_point() else s for s in ref)
    y, st1 = blk(x, st)
    assert y.shape == (3, 0, d_model) and len(st1) == len(st)
    for a, b in zip(st, st1): assert_close(kind, a.detach().double(), b.detach().double(), 0)
    gs = [torch.randn_like(b) for b in floats(st1)]
    torch.autograd.backward(floats(st1), gs)
    for a, g in zip(floats(st), gs): assert_close(f"{kind} state grad", g, a.grad, 0)
