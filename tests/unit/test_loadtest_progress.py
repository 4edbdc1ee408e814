"""Progress lines for make bench / make chaos: which step, elapsed, and an honest time left."""
import io

from loadtest.progress import QUIET_S, Progress, clock_text


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def make(expected=None, live=False):
    clock, out = Clock(), io.StringIO()
    return Progress(3, expected, stream=out, clock=clock, live=live), clock, out


def test_a_step_shows_what_runs_elapsed_and_left_then_its_numbered_result():
    progress, clock, out = make(expected=[10, 20, 30])
    progress.start("worker-kill")
    assert "▶ [  1/3] worker-kill" in out.getvalue() and "~1m00s left" in out.getvalue()
    clock.now += 20          # took twice its plan: the rest is expected to take twice theirs too
    progress.step("PASS worker-kill ...")
    assert out.getvalue().splitlines()[-1] == "[  1/3]   20.0s  PASS worker-kill ..."
    progress.start("worker-hang")
    assert progress.remaining() == 100.0
    clock.now += 30
    assert progress.remaining() == 70.0
    progress.close()


def test_without_a_plan_time_left_is_the_average_step_times_the_steps_left():
    progress, clock, _ = make()
    progress.start("a")
    assert progress.remaining() is None and "~? left" in progress.status_line()
    clock.now += 4
    progress.step("a done")
    progress.start("b")
    clock.now += 1
    assert progress.remaining() == 7.0    # 2 steps left at 4 s each, 1 s of this one gone
    progress.close()


def test_relabelling_a_running_step_keeps_its_clock():
    progress, clock, _ = make()
    progress.start("server: starting")
    clock.now += 3
    progress.start("server: / keepalive")
    clock.now += 1
    progress.step("done")
    assert progress._finished_s == 4
    progress.close()


def test_in_a_log_the_status_is_a_line_every_quiet_period_not_a_redraw():
    progress, clock, out = make()
    progress.start("long step")
    progress._status()
    assert out.getvalue().count("▶") == 1      # not again before QUIET_S
    clock.now += QUIET_S
    progress._status()
    assert out.getvalue().count("▶") == 2 and "\r" not in out.getvalue()
    progress.close()


def test_on_a_terminal_the_status_line_redraws_in_place_and_results_print_above_it():
    progress, clock, out = make(live=True)
    progress.start("s")
    clock.now += 1
    progress.step("first result")
    text = out.getvalue()
    assert text.startswith("\r\033[K▶") and "\r\033[K[  1/3]" in text
    progress.close()
    assert out.getvalue().endswith("\r\033[K")


def test_clock_text():
    assert clock_text(None) == "?" and clock_text(9.6) == "10s" and clock_text(72) == "1m12s"
