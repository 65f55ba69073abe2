"""normexp-reproduce end to end at the smoke profile: every experiment's runs, figures, claims and the report
are produced; a second invocation runs nothing; an interrupted run is redone alone; --only, --dry-run,
failed runs and parallel workers behave. What the verdicts are is not checked here (smoke is not evidence)."""

import json
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

from normexp.compose import compose
from normexp.errors import ConfigError
from normexp.reproduce import command as reproduce
from normexp.reproduce import execute, plan, spec

STATUSES = {"pass", "fail", "inconclusive"}


def smoke_args(results: Path, outputs: Path, *more: str) -> list[str]:
    return ["--profile", "smoke", "--jobs", "1", "--threads", "1", "--results", str(results), "--outputs",
            str(outputs), *more]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    results, outputs = root / "results", root / "outputs"
    code = reproduce.main([*smoke_args(results, outputs), "--jobs", "2"])  # both cores: the longest setup
    return SimpleNamespace(code=code, results=results, outputs=outputs)


def planned_cells(exp, smoke) -> int:
    return len(pd.read_csv(smoke.results / "smoke" / exp.id / "runs.csv"))


@pytest.mark.slow
def test_every_experiment_writes_runs_figures_claims_and_report(smoke):
    assert smoke.code == 0
    experiments = spec.discover()
    assert {e.id for e in experiments} >= {"ioffe2015/fig1_mnist", "ioffe2015/lr_tolerance"}
    report = (smoke.results / "REPORT.md").read_text()
    assert "## Profile `smoke` (not evidence)" in report
    for exp in experiments:
        out = smoke.results / "smoke" / exp.id
        runs = pd.read_csv(out / "runs.csv")
        seeds = exp.seeds("smoke")
        assert len(runs) >= len(exp.cells("smoke")) * len(seeds)
        assert set(runs["status"]) <= {"completed", "diverged"}, runs[["cell", "status"]]
        assert len(pd.read_csv(out / "curves.csv")) > 0
        for name in exp.spec.get("plots", {}):
            for ext in ("png", "pdf"):
                assert (out / f"{name}.{ext}").stat().st_size > 1000
            assert f"]({'smoke/' + exp.id}/{name}.png)" in report
        for name in exp.spec.get("tables", {}):
            assert len(pd.read_csv(out / f"{name}.csv")) > 0
        record = json.loads((out / "claims.json").read_text())
        assert [c["id"] for c in record["claims"]] == exp.claim_ids
        assert all(c["status"] in STATUSES and c["sentence"] for c in record["claims"])
        assert record["profile"] == "smoke" and record["seeds"] == seeds and record["errors"] == []
        assert record["command"].startswith("normexp-reproduce --profile smoke")
        for claim_id in exp.claim_ids:
            assert f"| [{claim_id}](" in report and f"claims.md#{claim_id.lower()})" in report
    claims = (smoke.results / "smoke").rglob("claims.json")
    walls = {json.loads(p.read_text())["wall_seconds"] for p in claims}
    assert len(walls) == 1  # the invocation's, stamped once it ended, though each was written when ready
    # the stage-2 cells of the lr-tolerance experiment were planned and run after the eta0 search
    lr_runs = pd.read_csv(smoke.results / "smoke" / "ioffe2015" / "lr_tolerance" / "runs.csv")
    assert {"relu_bn_x5", "relu_nobn_x5", "sigmoid_bn_x5", "sigmoid_nobn_x1"} <= set(lr_runs["cell"])


@pytest.mark.slow
def test_second_invocation_runs_nothing_and_an_interrupted_run_is_redone_alone(smoke, monkeypatch):
    calls = []
    real = execute.train_one
    counted = lambda cfg, run_dir, *a: calls.append(run_dir) or real(cfg, run_dir, *a)
    monkeypatch.setattr(execute, "train_one", counted)
    # the landscape section's surfaces and spectra are read back from the run dirs, not computed again
    from normexp.landscape import curvature, surface
    computed = []
    monkeypatch.setattr(surface, "compute_surface", lambda *a, **k: computed.append("surface"))
    monkeypatch.setattr(curvature, "spectrum", lambda *a, **k: computed.append("spectrum"))
    assert reproduce.main(smoke_args(smoke.results, smoke.outputs)) == 0
    assert calls == [] and computed == []
    landscape = smoke.results / "smoke" / "landscape" / "santurkar_vgg"
    landscape = json.loads((landscape / "claims.json").read_text())
    assert landscape["errors"] == [] and len(landscape["figures"]) == 3
    record = json.loads((smoke.results / "smoke" / "ioffe2015" / "fig1_mnist" / "claims.json").read_text())
    assert record["runs_run"] == 0 and record["runs"] == {"planned": 2, "completed": 2}
    assert "this invocation ran 0 of the" in (smoke.results / "REPORT.md").read_text()
    # interrupted: a run dir without its summary; stale: a run dir whose recorded config computes another run
    interrupted = smoke.outputs / "smoke" / "ioffe2015" / "fig1_mnist" / "bn" / "seed0"
    (interrupted / "summary.json").unlink()
    stale = smoke.outputs / "smoke" / "ioffe2015" / "fig1_mnist" / "nobn" / "seed0"
    recorded = yaml.safe_load((stale / "config.yaml").read_text())
    recorded["optim"]["lr"] = 0.5
    (stale / "config.yaml").write_text(yaml.safe_dump(recorded))
    old_files = {p.name: p.read_bytes() for p in stale.iterdir() if p.is_file() and p.name != "run.lock"}
    assert reproduce.main(smoke_args(smoke.results, smoke.outputs, "--only", "IS-1")) == 0
    assert sorted(calls) == sorted([str(interrupted), str(stale)])
    assert json.loads((interrupted / "summary.json").read_text())["status"] == "completed"
    assert yaml.safe_load((stale / "config.yaml").read_text())["optim"]["lr"] != 0.5
    (aside,) = stale.parent.glob("seed0.changed-*")  # moved aside, not deleted
    assert {p.name: p.read_bytes() for p in aside.iterdir() if p.name in old_files} == old_files


@pytest.mark.slow
def test_only_filters_experiments(smoke, tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    assert reproduce.main(smoke_args(results, smoke.outputs, "--only", "IS-2")) == 0
    written = sorted(p.parent.relative_to(results / "smoke").as_posix() for p in results.rglob("claims.json"))
    assert written == ["ioffe2015/fig1_mnist"]
    exps = spec.discover()
    ioffe = [e.id for e in exps if e.id.startswith("ioffe2015/")]
    assert [e.id for e in spec.select(exps, "IS")] == ioffe
    assert [e.id for e in spec.select(exps, "IS-4,lr_tolerance")] == ["ioffe2015/lr_tolerance"]
    with pytest.raises(ConfigError, match="--only"):
        spec.select(exps, "IS-9")
    monkeypatch.setattr(sys, "argv", ["normexp-reproduce", "--only", "XX-1", "--dry-run"])
    with pytest.raises(SystemExit) as exit_info:
        reproduce.cli()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("normexp-reproduce: error: --only='XX-1' is not valid") and "\n" not in err


def dry_run_lines(capsys, *args) -> list[str]:
    assert reproduce.main(["--dry-run", *args]) == 0
    return capsys.readouterr().out.splitlines()


def test_dry_run_lists_first_stage_commands(tmp_path, capsys):
    lines = dry_run_lines(capsys, "--profile", "smoke", "--outputs", str(tmp_path), "--only", "IS")
    commands = [line for line in lines if line.startswith("normexp-train ")]
    ioffe = [c for c in commands if "/ioffe2015/" in c]
    assert len(ioffe) == 2 + 6  # fig1: nobn, bn; lr_tolerance: the six search lrs (one seed each)
    assert any(line.startswith("# later stage not listed yet: the lr search") for line in lines)
    assert all("profile=smoke" in c and "hydra.run.dir=" in c for c in commands)


def test_paper_profile_composes_and_is_listed(tmp_path, capsys):
    lines = dry_run_lines(capsys, "--profile", "paper", "--outputs", str(tmp_path))
    commands = [line for line in lines if line.startswith("normexp-train ")]
    assert any("data=mnist " in c and "train.steps=50000" in c for c in commands)
    assert any("model=vgg11" in c and "data=cifar10" in c for c in commands)


@pytest.mark.slow
def test_dry_run_commands_reproduce_the_runs_configs(smoke, capsys):
    lines = dry_run_lines(capsys, "--profile", "smoke", "--outputs", str(smoke.outputs))
    done = [line.removeprefix("# done: ") for line in lines if line.startswith("# done: ")]
    assert len(done) == sum(planned_cells(e, smoke) for e in spec.discover())
    assert not [line for line in lines if line.startswith("normexp-train ")]
    for command in (done[0], done[-1]):
        words = shlex.split(command)
        run_dir = Path(words[-1].removeprefix("hydra.run.dir="))
        overrides = words[1:-1]
        assert json.loads((run_dir / "meta.json").read_text())["overrides"] == overrides
        recomposed = yaml.safe_load(OmegaConf.to_yaml(compose(overrides), resolve=True))
        assert recomposed == yaml.safe_load((run_dir / "config.yaml").read_text())


@pytest.mark.slow
def test_a_run_that_raises_is_recorded_failed_and_its_claims_are_inconclusive(tmp_path, monkeypatch):
    from normexp import train

    real = train.run

    def flaky(cfg, run_dir, **kw):
        if cfg.norm.name == "batch":
            raise RuntimeError("simulated crash")
        return real(cfg, run_dir, **kw)

    monkeypatch.setattr(train, "run", flaky)
    results = tmp_path / "results"
    assert reproduce.main(smoke_args(results, tmp_path / "outputs", "--only", "IS-1")) == 1
    record = json.loads((results / "smoke" / "ioffe2015" / "fig1_mnist" / "claims.json").read_text())
    assert record["runs"] == {"planned": 2, "completed": 1, "failed": 1}
    assert [c["status"] for c in record["claims"]] == ["inconclusive", "inconclusive"]
    assert "missing" in json.dumps(record["claims"])


@pytest.mark.slow
def test_parallel_workers_run_one_thread_each(tmp_path):
    outputs = tmp_path / "outputs"
    args = ["--profile", "smoke", "--jobs", "2", "--results", str(tmp_path / "r"), "--outputs", str(outputs)]
    assert reproduce.main([*args, "--only", "IS-1"]) == 0
    metas = [json.loads(p.read_text()) for p in outputs.rglob("meta.json")]
    assert len(metas) == 2 and all("train.threads=1" in m["overrides"] for m in metas)
    assert all(m["command"].startswith("normexp-train ") for m in metas)


def test_overrides_merge_and_cells_expand():
    merged = spec.merge_overrides(["data=a", "+x.y=1", "k=1"], ["data=b", "x.y=2"])
    assert merged == ["data=b", "+x.y=2", "k=1"]
    cells = spec.expand_cells([{"name": "c{optim.lr}", "overrides": ["norm=none"],
                                     "grid": {"optim.lr": [0.1, 1.0]}}])
    assert cells == [spec.CellSpec("c0.1", ("norm=none", "optim.lr=0.1")),
                     spec.CellSpec("c1", ("norm=none", "optim.lr=1"))]
    cells = spec.expand_cells([{"name": "c{optim.lr}", "grid": {"optim.lr": [0.1, 1.0]}}],
                                   {"optim.lr": [3]})
    assert [c.name for c in cells] == ["c3"]


def test_paper_profile_cells_build_and_take_a_step(tmp_path):
    """The paper profile's data is not here; every cell (both stages) still composes, validates everything
    but the data, builds its model and takes one SGD step on a random batch of the data set's shape."""
    import torch

    from normexp.data import data_info
    from normexp.models import build_model
    from normexp.norms import NormSpec

    planner = plan.Planner("paper", tmp_path, jobs=1, check_data=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: extra threads only wait on a busy machine
    for exp in spec.discover():
        cells = exp.cells("paper")
        if not cells:  # cells a stage builds (Wu & He's ResNet cells): tests/test_wuhe.py builds them
            continue
        for extra in exp.params.get("after_search", []):  # stage-2 cells at an example eta0
            lr = f"optim.lr={extra['multiple'] * 0.01:g}"
            cells.append(spec.CellSpec(extra["name"], (*extra["overrides"], lr)))
        if not cells:  # every cell comes from the stages hook (experiments/practice: the lr map, SD-6)
            continue
        runs = planner.runs(exp, cells)
        assert {r.choices["profile"] for r in runs} == {"paper"}
        assert {r.seed for r in runs} == set(exp.seeds("paper"))
        for r in runs[::3]:
            info = data_info(r.cfg.data)
            norm = NormSpec.from_config(r.cfg.norm)
            model = build_model(r.cfg.model, norm, info.in_shape, info.num_classes)
            x = torch.randn(4, *info.in_shape)
            loss = torch.nn.functional.cross_entropy(model(x), torch.randint(0, info.num_classes, (4,)))
            loss.backward()
            assert torch.isfinite(loss)
    torch.set_num_threads(threads)
    assert any("data not here" in n for notes in planner.notices.values() for n in notes)


# ---------------------------------------------------------------- profiles, layers, users' own specs

def readme_example(tmp_path: Path) -> Path:
    """The worked example of experiments/README.md, written to disk as a user would."""
    text = (spec.EXPERIMENTS_DIR / "README.md").read_text()
    folder = tmp_path / "my_exp"
    folder.mkdir()
    for name in ("gn_vs_bn.yaml", "gn_vs_bn.py"):
        after = text.split(f"`my_exp/{name}`:", 1)[1]
        (folder / name).write_text(after.split("```", 2)[1].split("\n", 1)[1])
    return folder


@pytest.mark.slow
def test_a_users_spec_folder_runs_through_the_pipeline(tmp_path):
    folder = readme_example(tmp_path)
    results = tmp_path / "results"
    assert reproduce.main(smoke_args(results, tmp_path / "outputs", "--spec", str(folder))) == 0
    out = results / "smoke" / "my_exp" / "gn_vs_bn"
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(runs["cell"]) == ["bn", "gn"] and set(runs["status"]) == {"completed"}
    assert set(runs["train.steps"]) == {30} and set(runs["train.eval_every"]) == {15}  # 0.5 of 30 steps
    record = json.loads((out / "claims.json").read_text())
    claim = record["claims"][0]
    assert claim["id"] == "MY-1" and claim["status"] in STATUSES and record["errors"] == []
    gn, bn = (runs.loc[runs["cell"] == c, "test_acc"].item() for c in ("gn", "bn"))
    assert claim["measured"]["GN acc"]["mean"] == pytest.approx(gn)
    assert claim["measured"]["BN acc"]["mean"] == pytest.approx(bn)
    assert (out / "accuracy.png").stat().st_size > 1000
    assert "my_exp/gn_vs_bn: GN vs BN" in (results / "REPORT.md").read_text()


def test_a_spec_without_claims_reports_its_figures_and_tables_and_no_verdict(tmp_path, capsys):
    folder = tmp_path / "figs"
    folder.mkdir()
    (folder / "only.yaml").write_text(
        "title: figures only\nbase: [model=mlp, data=mnist5k, norm=none]\ncells: [{name: c, overrides: []}]\n"
        "profiles:\n  smoke: {train.steps: 4, train.eval_every: 0.5}\nclaims: {}\n"
        "plots: {acc: acc_plot}\ntables: {acc: acc_table}\n")
    (folder / "only.py").write_text(
        "from normexp.plots import figure\n\n"
        "def acc_plot(ctx):\n    fig, axes = figure()\n"
        "    axes[0, 0].plot(ctx.runs.table['test_acc'])\n    return fig\n\n"
        "def acc_table(ctx):\n    return ctx.runs.table[['cell', 'test_acc']]\n")
    results = tmp_path / "results"
    args = smoke_args(results, tmp_path / "outputs", "--spec", str(folder))
    assert reproduce.main([*args, "--dry-run"]) == 0
    assert "(no claims: figures and tables only)" in capsys.readouterr().out
    assert reproduce.main(args) == 0
    out = results / "smoke" / "figs" / "only"
    record = json.loads((out / "claims.json").read_text())
    assert record["claims"] == [] and record["errors"] == [] and record["figures"] == ["acc.png"]
    acc = pd.read_csv(out / "runs.csv")["test_acc"].item()  # the run's own summary
    report = (results / "REPORT.md").read_text()
    assert "| claim |" not in report  # no empty verdict table
    assert "No claims (figures and tables only, no verdict)." in report
    assert f"| c | {acc:.4g} |" in report and "](smoke/figs/only/acc.png)" in report
    (folder / "only.yaml").write_text("title: t\ncells: []\nclaims:\n")
    with pytest.raises(ConfigError, match=r"only: claims=None.*\{\} for an experiment of figures"):
        spec.load_specs(folder)


def test_bad_spec_paths_and_keys_give_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="--spec"):
        spec.load_specs(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("title: t\ncells: []\nclaims: {}\nprofile: {quick: {}}\n")
    with pytest.raises(ConfigError, match=r"bad: profile=.*not a key here"):
        spec.load_specs(bad)
    bad.write_text("title: t\ncells: []\nclaims: {}\nprofiles: {fast: {seeds: [0]}}\n")
    with pytest.raises(ConfigError, match=r"profiles='fast'.*choose one of: full, paper, quick, smoke"):
        spec.load_specs(bad)


def test_layers_merge_and_cadence_fractions_become_steps(tmp_path):
    folder = tmp_path / "paper_x"
    folder.mkdir()
    (folder / "defaults.yaml").write_text(
        "base: [model=mlp, data=mnist5k]\nprofiles:\n  quick: {seeds: [5], train.steps: 400, "
        "train.eval_every: 0.25, train.log_every: 0.1}\n")
    (folder / "e.yaml").write_text(
        "title: t\nbase: [norm=none]\ncells: [{name: c, overrides: []}]\nclaims: {}\n"
        "profiles:\n  quick: {train.steps: 1000, probes: activations, probes.activations.every: 0.02}\n")
    exp = spec.load_specs(folder)[0]
    assert exp.seeds("quick") == [5] and exp.seeds("full") == [0, 1, 2]  # folder, then the suite's
    runs = plan.Planner("quick", tmp_path / "out", jobs=1).runs(exp, exp.cells("quick"))
    (run,) = runs
    assert run.overrides[:3] == ["model=mlp", "data=mnist5k", "norm=none"]
    # the spec's steps replace the folder's, and every fraction is of the spec's 1000 steps
    assert run.cfg.train.steps == 1000 and run.steps == 1000
    assert (run.cfg.train.eval_every, run.cfg.train.log_every) == (250, 100)
    assert run.cfg.probes.activations.every == 20 and run.choices["profile"] == "quick"
    assert "train.eval_every=250" in run.overrides and run.run_dir == tmp_path / "out/quick/paper_x/e/c/seed5"
    # the planner sets the resolved cadences on the composed config instead of composing again: the same
    # config as Hydra composes from the resolved overrides
    fresh = compose(run.overrides)
    planned = run.cfg.copy()
    planned.seed = fresh.seed
    assert OmegaConf.to_yaml(planned) == OmegaConf.to_yaml(fresh)


def test_a_profile_replaces_a_cells_overrides_but_not_its_pinned_ones(tmp_path):
    folder = tmp_path / "pin"
    folder.mkdir()
    (folder / "e.yaml").write_text(
        "title: t\nbase: [model=mlp, data=mnist5k, norm=none]\nclaims: {}\n"
        "cells:\n  - {name: c, overrides: [train.eval_every=0.1]}\n"
        "  - {name: 'p{optim.lr}', overrides: [train.eval_every=0.1], grid: {optim.lr: [0.1, 0.2]},\n"
        "     pinned: [train.eval_every=0, train.log_every=0.5]}\n"
        "profiles:\n  quick: {train.steps: 1000, train.eval_every: 0.25, train.log_every: 0.1}\n")
    exp = spec.load_specs(folder)[0]
    runs = {r.cell: r for r in plan.Planner("quick", tmp_path / "out", jobs=1).runs(exp, exp.cells("quick"))}
    assert set(runs) == {"c", "p0.1", "p0.2"}
    assert (runs["c"].cfg.train.eval_every, runs["c"].cfg.train.log_every) == (250, 100)
    for cell in ("p0.1", "p0.2"):
        assert (runs[cell].cfg.train.eval_every, runs[cell].cfg.train.log_every) == (0, 500)
        assert "train.eval_every=0" in runs[cell].overrides
    assert runs["p0.2"].cfg.optim.lr == 0.2


def test_cadence_fraction_with_epochs_counts_the_data_set(tmp_path):
    folder = tmp_path / "ep"
    folder.mkdir()
    (folder / "e.yaml").write_text(
        "title: t\nbase: [model=mlp, data=mnist5k, data.batch_size=100, train.epochs=2]\n"
        "cells: [{name: c, overrides: []}]\nclaims: {}\nprofiles:\n  quick: {train.eval_every: 0.1}\n")
    planner = plan.Planner("quick", tmp_path, jobs=1)
    (run, _) = planner.runs(spec.load_specs(folder)[0], [spec.CellSpec("c", ())])
    assert run.steps == 2 * 4000 // 100 and run.cfg.train.eval_every == 8  # mnist5k: 4,000 training digits


def test_a_folder_inherits_a_sibling_folders_defaults(tmp_path):
    """``inherit: <sibling>``: the sibling's base, params and profiles come first, the folder's own keys
    after them; a missing sibling is a one-line error."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "defaults.yaml").write_text(
        "base: [model=mlp, data=mnist5k]\nparams: {lr: 0.1, n: 3, width: {quick: 8, full: 16}}\n"
        "profiles:\n  quick: {seeds: [5], train.steps: 40}\n")
    (tmp_path / "b" / "defaults.yaml").write_text(
        "inherit: a\nbase: [norm=none]\nparams: {n: 4, width: {quick: 4, smoke: 2}}\n")
    (tmp_path / "b" / "e.yaml").write_text("title: t\ncells: [{name: c, overrides: []}]\nclaims: {}\n")
    exp = spec.load_specs(tmp_path / "b")[0]
    assert exp.spec["base"] == ["model=mlp", "data=mnist5k", "norm=none"]
    # a param given per profile merges profile by profile: b changes quick, adds smoke, keeps a's full
    assert exp.params == {"lr": 0.1, "n": 4, "width": {"quick": 4, "full": 16, "smoke": 2}}
    assert exp.seeds("quick") == [5]
    assert exp.profile("quick")["train.steps"] == 40
    (tmp_path / "b" / "defaults.yaml").write_text("inherit: nowhere\n")
    with pytest.raises(ConfigError, match=r"inherit='nowhere'.*sibling folder"):
        spec.load_specs(tmp_path / "b")


# ---------------------------------------------------------------- the pipeline's order of runs and writes

def test_pipeline_writes_each_experiment_once_its_runs_end_and_runs_the_long_and_staged_ones_first(
        tmp_path, monkeypatch):
    """Two experiments in one process (--jobs 1, so the order is the pipeline's): ``staged`` plans run s3 only
    once s1 and s2 have finished; ``plain`` has p1 and p2. The last results' runs.csv gives the runs' times.
    The first run starts while ``staged`` is planned; then runs of the experiment with a stages hook go first,
    the longest first (by this profile's times); a write goes as soon as its experiment has no run left,
    before the other experiment's later runs; each run is tried once."""
    from normexp.reproduce import pipeline

    outputs, results = tmp_path / "outputs", tmp_path / "results"
    times = {"smoke": {"staged": {"s1": 5, "s2": 50, "s3": 9}, "plain": {"p1": 10}},  # p2: never timed
             "full": {"plain": {"p2": 900}}}  # another profile's time, not this one's
    for profile, experiments in times.items():
        for exp, cells in experiments.items():
            (results / profile / exp).mkdir(parents=True)
            rows = [{"experiment": exp, "cell": c, "seed": 0, "wall_seconds": s} for c, s in cells.items()]
            pd.DataFrame(rows).to_csv(results / profile / exp / "runs.csv", index=False)

    def planned(exp, cell):
        return plan.PlannedRun(exp, cell, 0, [f"cell={cell}"], outputs / exp / cell)

    def plan_experiment(exp, planner):
        if exp.id == "plain":
            return [planned("plain", "p1"), planned("plain", "p2")], None
        first = [planned("staged", "s1"), planned("staged", "s2")]
        if all(r.finished for r in first):
            return [*first, planned("staged", "s3")], None
        return first, "s1 and s2"

    calls = []

    def train_one(cfg, run_dir, choices, overrides):
        calls.append(Path(run_dir).name)
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        summary = {"status": "failed" if Path(run_dir).name == "p1" else "completed"}
        (Path(run_dir) / "summary.json").write_text(json.dumps(summary))
        return summary

    def write(exp, runs, notices, extra):
        calls.append(f"write {exp.id}")
        return {"experiment": exp.id, "runs_run": extra["runs_run"]}

    monkeypatch.setattr(pipeline, "plan_experiment", plan_experiment)
    monkeypatch.setattr(execute, "train_one", train_one)
    planner = SimpleNamespace(profile="smoke", notices={})
    experiments = [SimpleNamespace(id="plain", spec={}), SimpleNamespace(id="staged", spec={"stages": "h"})]
    records = pipeline.Pipeline(experiments, planner, 1, write, results, log=lambda s: None).run()
    assert calls == ["p1", "s2", "s1", "s3", "write staged", "p2", "write plain"]
    assert records == [{"experiment": "plain", "runs_run": 2}, {"experiment": "staged", "runs_run": 3}]
    # again: only the failed run is tried again
    calls.clear()
    pipeline.Pipeline(experiments, planner, 1, write, results, log=lambda s: None).run()
    assert calls == ["p1", "write staged", "write plain"]


NESTED_REPORT = """
import json, os
from joblib import Parallel, delayed
from normexp.reproduce.pipeline import Workers
def nested():
    return os.getpid(), Parallel(n_jobs=2)(delayed(os.getpid)() for _ in range(4))
worker, inner = Workers(2).submit(nested).result()
print(json.dumps({"me": os.getpid(), "worker": worker, "inner": inner}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="forkserver workers: Linux only")
def test_a_parallel_inside_a_pipeline_worker_runs_in_its_threads():
    """As in joblib's own workers (the landscape's surfaces ask for jobs = 2 in their write): no second pool
    of processes, which would import torch again and leave joblib's temporary folders behind."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", NESTED_REPORT], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["worker"] != report["me"] and set(report["inner"]) == {report["worker"]}
