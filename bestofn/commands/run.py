"""``bestofn run INPUT``: sample N candidates per instruction, score them, keep the best;
one durable JSON line per instruction, resumable."""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from bestofn.commands.common import (
    EXIT_INTERRUPTED,
    add_cache,
    add_config,
    add_input_policy,
    command_config,
    finished,
    open_cache,
    print_summary,
    read_input,
    scorer_choices,
    warm_up_schemas,
)
from bestofn.config import Config
from bestofn.console import warn
from bestofn.engines import open_engine, open_scoring_engine
from bestofn.inputs import read_instructions
from bestofn.pipeline import BestOfN, RunStats
from bestofn.results import ResultsFile, engine_record, run_header, selection_record
from bestofn.scorers import check_scorers, make_scorer
from bestofn.values import Selection


def add_parser(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="sample N candidates per instruction, score them, keep the best",
        description="Sample N candidates per instruction, score them, select one. INPUT is "
        'JSONL ({"id"?, "instruction"} per line) or plain text (one instruction per line).',
    )
    run.add_argument("input", metavar="INPUT")
    add_config(run)
    run.add_argument("--n", type=int, help="candidates per instruction (generation.n)")
    run.add_argument(
        "--max-tokens", type=int, help="token cap per candidate (generation.max_tokens)"
    )
    run.add_argument("--seed", type=int, help="run seed (generation.seed)")
    run.add_argument(
        "--scorer",
        help=f"the selecting scorer, one of {scorer_choices()} (config key scorer; "
        f"default: {Config.scorer}, the paper's method)",
    )
    run.add_argument(
        "--output",
        default="results.jsonl",
        metavar="FILE",
        help="results JSONL (default: results.jsonl)",
    )
    run.add_argument(
        "--resume", action="store_true", help="continue an interrupted run in --output"
    )
    run.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    add_input_policy(run, "instructions")
    add_cache(run)
    run.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace, engine: Any = None) -> int:
    overrides = {
        "generation.n": args.n,
        "generation.max_tokens": args.max_tokens,
        "generation.seed": args.seed,
        "scorer": args.scorer,
    }
    config = command_config(args, **overrides)
    check_scorers([config.scorer], config)  # a missing template fails before the model loads
    source = read_input(
        args.input,
        read_instructions(args.input),
        strict=args.strict,
        limit=args.limit,
        what="instructions to run",
    )
    items = source.items
    results = ResultsFile(
        args.output,
        run_header("run", config, input=str(args.input)),
        resume=args.resume,
        overwrite=args.overwrite,
        match_keys=("kind", "config"),
    )
    if results.repaired_bytes:
        warn(f"dropped a torn last line ({results.repaired_bytes} bytes) from {args.output}")
    todo = [(item.id, item.instruction) for item in items if item.id not in results.done]
    if results.done:
        warn(
            f"resuming: {len(items) - len(todo)} of {len(items)} instructions already in {args.output}"
        )
    if not todo:
        results.close()
        warn("nothing left to do")
        return finished(source.skipped_lines)

    written = 0
    try:
        with contextlib.ExitStack() as stack:
            schemas = warm_up_schemas(config)
            active = stack.enter_context(open_engine(config, engine=engine, schemas=schemas))
            scoring = stack.enter_context(open_scoring_engine(config, active, schemas=schemas))
            results.write(engine_record(active, scoring))
            scorer = make_scorer(
                config.scorer,
                engine=scoring,
                config=config,
                cache=open_cache(args, config),
                oracle_records={item.instruction: item.extra for item in items},
            )
            best = BestOfN(active, scorer, config, scoring_engine=scoring)

            def write_batch(selections: list[Selection], stats: RunStats) -> None:
                nonlocal written
                for selection in selections:
                    results.write(selection_record(selection, scorer=best.scorer_name))
                results.flush()
                written += len(selections)
                warn(
                    f"wrote {written}/{len(todo)} instructions "
                    f"(generate {stats.generation_s:.1f} s, score {stats.scoring_s:.1f} s)"
                )

            total = best.run(todo, on_batch=write_batch)
            start_s = active.stats.start_s
    except KeyboardInterrupt:
        results.close()
        warn(
            f"interrupted: {written} of {len(todo)} instructions are in {args.output}; "
            "rerun with --resume to finish"
        )
        return EXIT_INTERRUPTED
    except BaseException:
        results.discard_if_unused()  # a run that failed before any work must not block its rerun
        raise
    finally:
        results.close()
    print_summary(
        {
            "instructions": total.instructions,
            "candidates": total.candidates,
            "unscored": total.unscored,
            "fallbacks": total.fallbacks,
            "failed": total.failed,
            "scorer_errors": total.scorer_errors,
            "skipped_lines": source.skipped_lines,
            "engine_start_s": round(start_s, 2),
            "generation_s": round(total.generation_s, 2),
            "scoring_s": round(total.scoring_s, 2),
            "generated_tokens": total.generated_tokens,
            "scoring_prompt_tokens": total.scoring_prompt_tokens,
            "scoring_output_tokens": total.scoring_output_tokens,
            "scoring_tokens_from_generation": total.tokens_from_generation,
            "output": args.output,
        }
    )
    return finished(source.skipped_lines, total.failed + total.scorer_errors)
