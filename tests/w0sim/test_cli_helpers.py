"""w0sim.cli's helpers in full: the one-line error of each kind of exception, the printed error line, the --workers,
--pdm-version and output-folder checks (whole messages, both sides of each bound), the --seed option, the progress
bar's columns, and the command group and command classes (plain help, help when run bare, whole first sentences)."""
from __future__ import annotations

import io
from concurrent.futures.process import BrokenProcessPool

import pytest
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

import w0sim.cli as cli
import w0sim.runner

UNEXPECTED_TAIL = ("(an unexpected error, a w0sim bug: please report it with the command; W0SIM_TRACEBACK=1 shows where "
                   "it happened)")


def project_error(module: str):
    """An exception class defined in `module` (only its package counts)."""
    return type("ProjectError", (Exception,), {"__module__": module})


def test_a_dead_worker_process_is_named_with_its_message_on_one_line():
    assert cli._error_line(BrokenProcessPool("pool\n  went   away")) == "a worker process died: pool went away"


def test_a_machine_error_is_its_type_and_message():
    err = FileNotFoundError(2, "No such file or directory", "x.npz")
    assert cli._error_line(err) == "FileNotFoundError: [Errno 2] No such file or directory: 'x.npz'"
    assert cli._error_line(PermissionError("denied")) == "PermissionError: denied"


def test_running_out_of_memory_says_so_even_without_a_message():
    assert cli._error_line(MemoryError("a  big\narray")) == "out of memory (MemoryError: a big array)"
    assert cli._error_line(MemoryError()) == "out of memory (MemoryError: (no message))"


@pytest.mark.parametrize("package", ["agents", "metrics", "policies", "scenarios", "sim", "training", "w0sim"])
def test_the_projects_own_errors_are_their_message_alone(package):
    error = project_error(f"{package}.module")
    assert cli._error_line(error("split navsim:x:\n no folder")) == "split navsim:x: no folder"
    assert cli._error_line(error("")) == "ProjectError: (no message)"
    assert cli._error_line(error(" \n ")) == "ProjectError: (no message)"


@pytest.mark.parametrize("module", ["numpy.linalg", "sim_extra.module", "builtins", "w0simx"])
def test_anything_else_is_an_unexpected_error_asking_for_a_report(module):
    error = project_error(module)
    assert cli._error_line(error("bad   thing")) == f"ProjectError: bad thing {UNEXPECTED_TAIL}"
    assert cli._error_line(error()) == f"ProjectError: (no message) {UNEXPECTED_TAIL}"
    assert cli._error_line(ValueError("x")) == f"ValueError: x {UNEXPECTED_TAIL}"


def test_an_error_is_printed_red_prefixed_as_it_is_on_one_line(monkeypatch):
    """Markup in the message is printed, not interpreted; nothing in it is highlighted; the line is never wrapped."""
    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, force_terminal=True, color_system="standard", width=40,
                                                emoji=False))
    message = "scene 12 in /tmp/x.npz: [bold]fields[/bold] 'a' out of range, and a long tail of words"
    cli._error(message)
    assert out.getvalue() == f"\x1b[31merror:\x1b[0m {message}\n"


def test_the_progress_bar_shows_the_description_a_bar_done_of_total_and_the_time_left_on_the_cli_console():
    progress = cli._progress()
    assert [type(c) for c in progress.columns] == [TextColumn, BarColumn, MofNCompleteColumn, TimeRemainingColumn]
    assert progress.columns[0].text_format == "{task.description}"
    assert progress.console is cli.console


@pytest.fixture
def eight_workers(monkeypatch):
    """A machine of 2 cores allowing 8 workers."""
    monkeypatch.setattr(w0sim.runner, "max_workers", lambda: 8)
    monkeypatch.setattr(cli.os, "cpu_count", lambda: 2)


def refusal(check, value) -> typer.BadParameter:
    with pytest.raises(typer.BadParameter) as err:
        check(value)
    assert err.value.param_hint is None
    return err.value


@pytest.mark.parametrize("check", [cli._check_workers, cli._check_workers_or_zero])
def test_workers_from_1_to_the_limit_pass_and_none_means_all_cores(eight_workers, check):
    assert [check(v) for v in (None, 1, 2, 8)] == [None, 1, 2, 8]


@pytest.mark.parametrize("check", [cli._check_workers, cli._check_workers_or_zero])
def test_workers_above_the_limit_or_negative_are_refused_naming_the_limit_and_the_cores(eight_workers, check):
    for value in (9, -1):
        assert refusal(check, value).message == (f"{value} is not between 1 and 8 (4 per CPU core, at most 256; this "
                                                 "machine has 2 cores)")


def test_zero_workers_means_all_cores_only_where_allowed(eight_workers):
    assert cli._check_workers_or_zero(0) == 0
    assert refusal(cli._check_workers, 0).message == ("0 is not between 1 and 8 (4 per CPU core, at most 256; this "
                                                      "machine has 2 cores)")


def test_a_pdm_version_is_v1_1_or_v2_2():
    assert cli._check_pdm_version("v1.1") == "v1.1" and cli._check_pdm_version("v2.2") == "v2.2"
    assert refusal(cli._check_pdm_version, "V1.1").message == ("'V1.1' is not a PDM score version; choose one of v1.1, "
                                                               "v2.2 (v1.1: PDMS, v2.2: EPDMS)")


def test_an_output_folder_may_be_new_or_existing_but_not_a_file(tmp_path):
    assert cli._check_out_folder(tmp_path / "new") is None
    assert cli._check_out_folder(tmp_path) is None
    target = tmp_path / "a_file"
    target.write_text("mine")
    with pytest.raises(typer.BadParameter) as err:
        cli._check_out_folder(target)
    assert err.value.message == f"{target} is a file; give a folder (new, or one to resume)"
    assert err.value.param_hint == "--out"
    with pytest.raises(typer.BadParameter) as err:
        cli._check_out_folder(target, "--data")
    assert err.value.param_hint == "--data"
    assert target.read_text() == "mine"


def test_the_seed_option_defaults_to_0_within_0_and_2_to_the_32_minus_1():
    option = cli._seed_option()
    assert (option.default, option.param_decls, option.min, option.max, option.help) == (
        0, ("--seed",), 0, 2**32 - 1, "Seed (0 to 2**32 - 1).")
    option = cli._seed_option(5, help="Agent seed.")
    assert (option.default, option.param_decls, option.min, option.max, option.help) == (
        5, ("--seed",), 0, 4294967295, "Agent seed.")


def make_group():
    app = cli._Typer(help="Group help.")

    @app.command("go", help="Do the thing, whole. Then more.")  # named otherwise than the function
    def do_it() -> None:
        pass

    @app.command("other")
    def other() -> None:
        """An other thing."""

    return app, typer.main.get_command(app)


def test_a_group_has_plain_help_and_prints_it_when_run_bare():
    app, group = make_group()
    assert app.rich_markup_mode is None and group.rich_markup_mode is None
    assert group.no_args_is_help is True and group.help == "Group help."


def test_commands_keep_their_name_and_help_and_list_their_whole_first_sentence():
    _, group = make_group()
    assert sorted(group.commands) == ["go", "other"]
    command = group.commands["go"]
    assert isinstance(command, cli._Command) and isinstance(group.commands["other"], cli._Command)
    assert command.help == "Do the thing, whole. Then more."
    assert command.get_short_help_str() == "Do the thing, whole."
    assert command.get_short_help_str(limit=5) == "Do the thing, whole."  # any limit asked for


def test_a_first_sentence_is_listed_whole_up_to_10000_characters():
    whole = "a" * 9995 + " bcd."  # 10 000 characters
    assert cli._Command(name="x", help=whole).get_short_help_str() == whole
    longer = "a" * 9996 + " bcd."  # 10 001
    assert cli._Command(name="x", help=longer).get_short_help_str() == "a" * 9996 + "..."
