"Blocks and models: shapes, state equivalence (one pass == segments == steps), gradients, reset, configs, compile, autocast, heads, positions."
import hashlib
import pytest, torch
from rfwp.utils import assert_close
from rfwp.layers import LAYERS, LayerConfig, make_layer, detach_state, reset_state
from rfwp.models import ModelConfig, SeqModel, count_params

KINDS = ["linear", "delta", "delta_mlp", "delta_delta", "delta_rnn", "delta_lstm", "rdn", "lstm_delta", "srwm", "lstm", "transformer"]
# (kind, extra LayerConfig fields): every kind, plus a deeper fast net and the LM head scaling
CASES = [(k, {}) for k in KINDS] + [("delta_mlp", dict(fast_depth=2)), ("delta", dict(scale_heads=True)),
         ("delta", dict(beta_range=2.0, gate=True)), ("lstm_delta", dict(gate=True)), ("delta_rnn", dict(beta_range=2.0, gate=True)),
         ("delta_lstm", dict(beta_range=2.0)), ("delta_delta", dict(beta_range=2.0)), ("delta_mlp", dict(beta_range=2.0)),
         ("delta_mlp", dict(gate=True)), ("delta_delta", dict(beta_range=2.0, gate=True)), ("delta_lstm", dict(beta_range=2.0, gate=True)),
         ("rdn", dict(beta_range=2.0)), ("rdn", dict(beta_range=2.0, gate=True))]
IDS = [k + "".join(f"-{a}{b}" for a, b in kw.items()) for k, kw in CASES]
d_model, H = 32, 4

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py

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
    with pytest.raises(ValueError, match="head='tied' needs n_out == vocab_size"): ModelConfig(vocab_size=5, n_out=3, head="tied")
    with pytest.raises(ValueError, match="head must be one of linear, tied, adaptive, auto"): ModelConfig(vocab_size=5, head="softmax")
    with pytest.raises(ValueError, match="positions must be one of"): ModelConfig(vocab_size=5, positions="rotary")
    with pytest.raises(ValueError, match="cutoffs must be increasing"): ModelConfig(vocab_size=5, cutoffs=(3, 2))
    with pytest.raises(ValueError, match="embed_dropout"): ModelConfig(vocab_size=5, embed_dropout=1.0)
    with pytest.raises(ValueError, match="embed_std"): ModelConfig(vocab_size=5, embed_std=0.0)
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
    t = SeqModel(ModelConfig("delta", n_layers=2, d_model=d_model, n_heads=H, vocab_size=50, head="tied"))
    assert t.head.weight is t.embed.weight and m.num_params() == count_params(m)
    assert not t.head.bias.any()                                              # the tied head's bias starts at zero
    u = SeqModel(ModelConfig("delta", n_layers=2, d_model=d_model, n_heads=H, vocab_size=50))
    assert u.num_params() - t.num_params() == 50 * d_model
    t.eval(); h, _ = t.hidden(tok)                                            # logits = h Eᵀ + b
    assert_close("tied logits", h @ t.embed.weight.T + t.head.bias, t(tok)[0], 1e-6)
    with pytest.raises(ValueError, match="integer tensor"): m(tok.float())
    with pytest.raises(ValueError, match="state"): m(tok, [None])

def test_model_config_older_checkpoints():
    "The `tie_embeddings` flag of older checkpoints becomes `head`; a tied model's old weights load into the new tied head."
    old = {k: v for k, v in ModelConfig("rdn", vocab_size=20).to_dict().items() if k not in ("head", "cutoffs", "div_value", "positions", "embed_std", "embed_dropout")}
    assert ModelConfig.from_dict({**old, "tie_embeddings": False}) == ModelConfig("rdn", vocab_size=20)
    assert ModelConfig.from_dict({**old, "tie_embeddings": True}).head == "tied"
    cfg = ModelConfig("delta", n_layers=1, d_model=d_model, n_heads=H, vocab_size=20, head="tied")
    assert set(SeqModel(cfg).state_dict()) >= {"embed.weight", "head.weight", "head.bias"}  # the names an old tied model saved

# sha256 (first 16 hex digits) of the state_dict (names, then float64 values) of
# SeqModel(ModelConfig(kind, n_layers=2, d_model=16, n_heads=2, vocab_size=13, n_out=5)) built after torch.manual_seed(0),
# and the sum of its train-mode logits (dropout drawn after torch.manual_seed(1)) on torch.randint(0, 13, (2, 7)) drawn
# after the build; computed before the head, positions and embedding options existed: the defaults must stay bit for bit.
DEFAULTS_CHECKSUM = {
    "linear": ("3af97d0b6c9ef80d", 3.071083), "delta": ("46bbc8f0d957353d", 4.130276), "delta_mlp": ("ac1e8609a45efb6f", -1.512248),
    "delta_delta": ("a9974a91d16e68c6", 1.49148), "delta_rnn": ("a9974a91d16e68c6", 1.287892), "delta_lstm": ("44831f7e207f40b6", 8.765997),
    "rdn": ("a5b7feb7bac520e5", 13.234805), "lstm_delta": ("ec90014957d10906", -0.744221), "lstm": ("31a82adc327aac41", 1.662329),
    "transformer": ("ee482b039f6fef3c", 9.808765)}

@pytest.mark.parametrize("kind", list(DEFAULTS_CHECKSUM))
def test_model_defaults_unchanged(kind):
    digest, out_sum = DEFAULTS_CHECKSUM[kind]
    torch.manual_seed(0)
    m = SeqModel(ModelConfig(kind, n_layers=2, d_model=16, n_heads=2, vocab_size=13, n_out=5))
    h = hashlib.sha256()
    for k, v in m.state_dict().items(): h.update(k.encode()); h.update(v.detach().double().numpy().tobytes())
    assert h.hexdigest()[:16] == digest
    x = torch.randint(0, 13, (2, 7))
    m.train(); torch.manual_seed(1)
    y, _ = m(x)
    assert abs(y.detach().double().sum().item() - out_sum) < 1e-5
    assert isinstance(m.head, torch.nn.Linear) and m.embed_drop is None
    assert (m.pos is not None) == (kind == "transformer")

@pytest.mark.parametrize("head", ["linear", "tied", "adaptive"])
def test_heads_log_probs_and_nll(head):
    "Every head: probabilities sum to 1, the NLL is -log p of the target, logits give the same distribution; float32 under bf16 autocast."
    torch.manual_seed(0)
    cfg = ModelConfig("delta", n_layers=1, d_model=d_model, n_heads=H, vocab_size=300, head=head, cutoffs=(50, 200, 400), dropout=0.0)
    m = SeqModel(cfg).double()
    x = torch.randint(0, 300, (2, 9))
    h, _ = m.hidden(x[:, :-1])
    lp = m.log_probs(h)                                                       # (B, T, V)
    assert lp.shape == (2, 8, 300)
    assert_close(f"{head}: sum p", torch.ones(2, 8, dtype=lp.dtype), lp.exp().sum(-1), 1e-12)
    nll, _ = m(x[:, :-1], targets=x[:, 1:])
    assert_close(f"{head}: nll", -lp.gather(-1, x[:, 1:, None])[..., 0], nll, 1e-12)
    assert_close(f"{head}: logits", lp, torch.log_softmax(m(x[:, :-1])[0], -1), 1e-12)
    if head == "adaptive": assert m.head.cutoffs == [50, 200, 300] and cfg.adaptive()
    m = SeqModel(cfg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        nll, _ = m(x[:, :-1], targets=x[:, 1:])
    assert nll.dtype == torch.float32 and torch.isfinite(nll).all()

def test_head_auto():
    assert ModelConfig(vocab_size=65, head="auto").resolved_head() == "tied"
    big = ModelConfig(vocab_size=30000, head="auto")
    assert big.resolved_head() == "adaptive" and big.used_cutoffs() == [20000]
    with pytest.raises(ValueError, match="needs a cut-off below vocab_size=50"): ModelConfig(vocab_size=50, head="adaptive")

def test_learned_positions():
    "Learned positions: N(0, 0.02²), continued from the Transformer's cache, an error beyond max_len; other kinds may use them from scratch."
    torch.manual_seed(0)
    m = SeqModel(ModelConfig("transformer", n_layers=2, d_model=d_model, n_heads=H, vocab_size=11, positions="learned", max_len=10, dropout=0.0)).double().eval()
    assert m.pos.weight.shape == (10, d_model) and abs(m.pos.weight.std().item() - 0.02) < 0.005
    tok = torch.randint(0, 11, (2, 10))
    with torch.no_grad():
        y, _ = m(tok); y1, s = m(tok[:, :4]); y2, _ = m(tok[:, 4:], s)
    assert_close("learned positions: segments", y, torch.cat([y1, y2], 1), 1e-10)
    with pytest.raises(ValueError, match="positions up to 11 requested but max_len=10"): m(torch.randint(0, 11, (2, 11)))
    with pytest.raises(ValueError, match="positions up to 11 requested but max_len=10"): m(tok[:, :7], s)
    d = SeqModel(ModelConfig("delta", n_layers=1, d_model=d_model, n_heads=H, vocab_size=11, positions="learned", max_len=10))
    _, s = d(tok[:, :3])
    with pytest.raises(ValueError, match="KV cache to count positions"): d(tok[:, 3:], s)
    n = SeqModel(ModelConfig("transformer", n_layers=1, d_model=d_model, n_heads=H, vocab_size=11, positions="none"))
    assert n.pos is None

def test_sinusoidal_positions_for_any_kind():
    m = SeqModel(ModelConfig("delta", n_layers=1, d_model=d_model, n_heads=H, vocab_size=11, positions="sinusoidal", max_len=16))
    assert m.pos is not None and m(torch.randint(0, 11, (2, 16)))[0].shape == (2, 16, 11)

def test_embedding_options():
    torch.manual_seed(0)
    cfg = ModelConfig("delta", n_layers=1, d_model=d_model, n_heads=H, vocab_size=500, embed_std=0.02, embed_dropout=0.5, dropout=0.0)
    m = SeqModel(cfg)
    assert abs(m.embed.weight.std().item() - 0.02) < 0.002
    tok = torch.randint(0, 500, (2, 6))
    m.eval(); a = m(tok)[0]
    assert torch.equal(a, m(tok)[0])                                          # no dropout in eval mode
    m.train(); assert not torch.equal(a, m(tok)[0])                           # dropout on the embeddings in training

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


def test_options_change_the_layer_and_are_refused_where_absent():
    "beta_range and gate reach the op (outputs differ from the plain layer with the same weights); kinds without them refuse them."
    x = rand_x()
    plain, neg = block("delta"), block("delta", beta_range=2.0)
    neg.load_state_dict(plain.state_dict())
    with torch.no_grad(): assert not torch.allclose(plain(x)[0], neg(x)[0])
    gated = block("delta", gate=True)
    assert gated.width() == plain.width() + 1 and gated.A_log.shape == (H,) and gated.dt_bias.shape == (H,)
    for kind in ("linear", "lstm", "transformer", "srwm"):
        with pytest.raises(ValueError, match="no option gate"): LayerConfig(kind, d_model, H, gate=True)
    for kind in ("linear", "lstm", "transformer", "srwm"):
        with pytest.raises(ValueError, match="no option beta_range"): LayerConfig(kind, d_model, H, beta_range=2.0)
    with pytest.raises(ValueError, match="beta_range must be in"): LayerConfig("delta", d_model, H, beta_range=0)
    for kind in ("delta", "lstm_delta", "delta_mlp", "delta_delta", "delta_rnn", "delta_lstm", "rdn"):
        "the gate reaches the op: switching the decay off (A = e^A_log -> 0, so g -> 0) changes the output"
        gated = block(kind, gate=True)
        assert gated.width() == block(kind).width() + (3 if kind == "delta_lstm" else 1), kind
        with torch.no_grad():
            y = gated(x)[0]
            gated.A_log.fill_(-60.0)
            assert (y - gated(x)[0]).abs().max() > 1e-4, kind
    cfg = ModelConfig(kind="delta", d_model=d_model, n_heads=H, vocab_size=5, beta_range=2.0, gate=True)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg and SeqModel(cfg).blocks[0].cfg.gate
