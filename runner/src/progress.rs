//! Progress of long work, on stderr and never on stdout (where a tool's JSON goes).
//!
//! One [`Progress`] per process, in one of four [`Style`]s:
//! - [`Style::Bars`]: indicatif bars, only when stderr is a terminal;
//! - [`Style::Lines`]: the same events as plain log lines (`-o json`, `--quiet`, no terminal: logs
//!   and CI), printable characters only;
//! - [`Style::Events`]: one machine-readable line per event (prefix [`EVENT_PREFIX`]), written by
//!   a child process for the parent that shows it: the parent runs the child with
//!   [`Runner::run_streaming`](crate::Runner::run_streaming), hands each stderr line to
//!   [`Progress::relay`], and keeps the child's stderr without them ([`strip_events`]);
//! - [`Style::Hidden`], which shows nothing.
//!
//! A [`Task`] is one long operation (a search, a list of paths, a matrix of cells, a wait): a
//! name, a position out of an optional length, a unit, and a message per event. Tools create
//! tasks and update them; the style decides how each event is shown. A [`Progress::counter`]
//! counts items of a known number and also shows the time left; [`Progress::without_tasks`]
//! keeps a process's log lines but hides the tasks of work too fine-grained to show (one wait
//! per pod of a fleet, under the fleet's own counter).

use std::collections::HashMap;
use std::io::{IsTerminal as _, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

/// How a [`Progress`] shows its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Bars,
    Lines,
    Events,
    Hidden,
}

impl Style {
    /// Bars when stderr is a terminal and nothing asked for plain output (`plain`: `-o json`,
    /// `--quiet`); plain lines otherwise.
    pub fn for_stderr(plain: bool) -> Self {
        if !plain && std::io::stderr().is_terminal() {
            Self::Bars
        } else {
            Self::Lines
        }
    }
}

/// The start of every line [`Style::Events`] writes.
pub const EVENT_PREFIX: &str = "lab-progress ";

/// One progress event, as a child reports it to its parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub task: String,
    pub pos: u64,
    pub len: Option<u64>,
    pub unit: String,
    pub msg: String,
    pub done: bool,
}

impl Event {
    /// The event as one line of [`Style::Events`] (no newline).
    pub fn to_line(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        format!("{EVENT_PREFIX}{json}")
    }

    /// The event of a [`Style::Events`] line; `None` for any other line.
    pub fn parse(line: &str) -> Option<Self> {
        serde_json::from_str(line.trim_end().strip_prefix(EVENT_PREFIX)?).ok()
    }
}

/// `stderr` without the lines [`Style::Events`] wrote: what the child itself said.
pub fn strip_events(stderr: &str) -> String {
    stderr
        .split_inclusive('\n')
        .filter(|l| !l.starts_with(EVENT_PREFIX))
        .collect()
}

type Sink = Arc<Mutex<Box<dyn Write + Send>>>;

/// The progress of one process; cheap to clone (clones share tasks and output).
#[derive(Clone)]
pub struct Progress {
    style: Style,
    multi: Option<MultiProgress>,
    sink: Sink,
    tasks: Arc<Mutex<HashMap<String, Task>>>,
    /// Whether [`Progress::task`] shows its tasks ([`Progress::without_tasks`] hides them).
    tasks_shown: bool,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("style", &self.style)
            .finish_non_exhaustive()
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::hidden()
    }
}

impl Progress {
    /// Progress on stderr in `style`.
    pub fn new(style: Style) -> Self {
        Self::with_writer(style, Box::new(std::io::stderr()))
    }

    /// Progress whose lines and events go to `out` (bars always draw on stderr, and only on a
    /// terminal).
    pub fn with_writer(style: Style, out: Box<dyn Write + Send>) -> Self {
        let multi = (style == Style::Bars)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Self {
            style,
            multi,
            sink: Arc::new(Mutex::new(out)),
            tasks: Arc::new(Mutex::new(HashMap::new())),
            tasks_shown: true,
        }
    }

    /// The same output for log lines, but every task it starts is hidden: for work nested under
    /// a task of its own that already shows it (a fleet's counter over its cards' waits).
    #[must_use]
    pub fn without_tasks(&self) -> Self {
        Self {
            tasks_shown: false,
            ..self.clone()
        }
    }

    /// Progress that shows nothing.
    pub fn hidden() -> Self {
        Self::with_writer(Style::Hidden, Box::new(std::io::sink()))
    }

    pub fn style(&self) -> Style {
        self.style
    }

    /// Starts a task (replacing one of the same name): `len` in `unit`s when known.
    pub fn task(&self, name: &str, len: Option<u64>, unit: &str) -> Task {
        self.start(name, len, unit, false)
    }

    /// Starts a task counting `len` items (cards, cells) that also shows the time left, as
    /// estimated from the items done so far.
    pub fn counter(&self, name: &str, len: u64, unit: &str) -> Task {
        self.start(name, Some(len), unit, true)
    }

    fn start(&self, name: &str, len: Option<u64>, unit: &str, eta: bool) -> Task {
        if !self.tasks_shown {
            return Task::hidden_named(name, len, unit);
        }
        let bar = self.multi.as_ref().map(|m| {
            let bar = m.add(len.map_or_else(ProgressBar::no_length, ProgressBar::new));
            bar.set_style(bar_style(len.is_some(), unit, eta));
            bar.set_prefix(name.to_owned());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        let task = Task(Arc::new(TaskInner {
            name: name.to_owned(),
            unit: unit.to_owned(),
            style: self.style,
            eta,
            sink: Arc::clone(&self.sink),
            bar,
            state: Mutex::new(State {
                pos: 0,
                len,
                started: Instant::now(),
                done: false,
            }),
        }));
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), task.clone());
        task
    }

    /// A log line that is no task's event (a retry, a warning): above the bars on a terminal, a
    /// plain line otherwise (also for [`Style::Events`], where the parent shows it as the child's
    /// own stderr); nothing when hidden.
    /// Text of several lines is several log lines.
    pub fn log(&self, text: &str) {
        for line in text.lines().map(printable) {
            match (self.style, &self.multi) {
                (Style::Hidden, _) => {}
                (Style::Bars, Some(multi)) => {
                    if multi.println(&line).is_err() {
                        eprintln!("{line}");
                    }
                }
                _ => {
                    let mut sink = self.sink.lock().unwrap_or_else(PoisonError::into_inner);
                    let _ = writeln!(sink, "{line}");
                    let _ = sink.flush();
                }
            }
        }
    }

    /// Shows a child's event line as this progress's own (the task of the same name, started
    /// when first seen). Returns whether `line` was an event.
    pub fn relay(&self, line: &str) -> bool {
        let Some(event) = Event::parse(line) else {
            return false;
        };
        let existing = self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&event.task)
            .cloned();
        let task = existing.unwrap_or_else(|| self.task(&event.task, event.len, &event.unit));
        if let Some(len) = event.len {
            task.set_len(len);
        }
        if event.done {
            task.finish_at(event.pos, &event.msg);
        } else {
            task.update(event.pos, &event.msg);
        }
        true
    }
}

fn bar_style(known_len: bool, unit: &str, eta: bool) -> ProgressStyle {
    // A unit never holds a brace: the template's own syntax.
    let unit: String = unit.chars().filter(|c| !matches!(c, '{' | '}')).collect();
    let template = if known_len && eta {
        format!(
            "{{spinner}} {{prefix:<16}} [{{bar:28}}] {{pos}}/{{len}} {unit} {{elapsed:>4}}, ETA {{eta}} {{wide_msg}}"
        )
    } else if known_len {
        format!(
            "{{spinner}} {{prefix:<16}} [{{bar:28}}] {{pos}}/{{len}} {unit} {{elapsed:>4}} {{wide_msg}}"
        )
    } else if unit.is_empty() {
        // Nothing to count (a pull, a phase): the time and what it does.
        "{spinner} {prefix:<16} {elapsed:>4} {wide_msg}".to_owned()
    } else {
        format!("{{spinner}} {{prefix:<16}} {{pos}} {unit} {{elapsed:>4}} {{wide_msg}}")
    };
    ProgressStyle::with_template(&template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

#[derive(Debug)]
struct State {
    pos: u64,
    len: Option<u64>,
    started: Instant,
    done: bool,
}

struct TaskInner {
    name: String,
    unit: String,
    style: Style,
    /// Whether the time left is shown ([`Progress::counter`]).
    eta: bool,
    sink: Sink,
    bar: Option<ProgressBar>,
    state: Mutex<State>,
}

/// One long operation of a [`Progress`]; clones are the same task.
#[derive(Clone)]
pub struct Task(Arc<TaskInner>);

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("name", &self.0.name)
            .finish_non_exhaustive()
    }
}

impl Task {
    /// A task that shows nothing (for code that reports progress only when asked to).
    pub fn hidden() -> Self {
        Self::hidden_named("", None, "")
    }

    /// A hidden task that still keeps its name and position.
    fn hidden_named(name: &str, len: Option<u64>, unit: &str) -> Self {
        Self(Arc::new(TaskInner {
            name: name.to_owned(),
            unit: unit.to_owned(),
            style: Style::Hidden,
            eta: false,
            sink: Arc::new(Mutex::new(Box::new(std::io::sink()))),
            bar: None,
            state: Mutex::new(State {
                pos: 0,
                len,
                started: Instant::now(),
                done: false,
            }),
        }))
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Where the task is: (position, length).
    pub fn position(&self) -> (u64, Option<u64>) {
        let s = self.state();
        (s.pos, s.len)
    }

    /// Whether the task has had its last event.
    pub fn is_done(&self) -> bool {
        self.state().done
    }

    /// Sets the length (no event of its own).
    pub fn set_len(&self, len: u64) {
        self.state().len = Some(len);
        if let Some(bar) = &self.0.bar {
            if bar.length().is_none() {
                bar.set_style(bar_style(true, &self.0.unit, self.0.eta));
            }
            bar.set_length(len);
        }
    }

    /// One event: the task is at `pos`, with `msg`.
    pub fn update(&self, pos: u64, msg: &str) {
        self.state().pos = pos;
        self.emit(msg, false);
    }

    /// Moves the task to `pos` without an event: a bar moves, no line is written (a wait's
    /// seconds between two changes of what it waits for).
    pub fn tick(&self, pos: u64) {
        self.state().pos = pos;
        if let Some(bar) = &self.0.bar {
            bar.set_position(pos);
        }
    }

    /// Moves the task to `pos` and a bar's message to `msg`, without a line: what changes too
    /// often for a log (every card of a fleet), between the events that are written.
    pub fn show(&self, pos: u64, msg: &str) {
        self.state().pos = pos;
        if let Some(bar) = &self.0.bar {
            bar.set_position(pos);
            bar.set_message(printable(msg));
        }
    }

    /// One event: one more unit done, with `msg`.
    pub fn inc(&self, msg: &str) {
        self.state().pos += 1;
        self.emit(msg, false);
    }

    /// The last event: the task ended where it is, with `msg`.
    pub fn finish(&self, msg: &str) {
        let pos = self.state().pos;
        self.finish_at(pos, msg);
    }

    /// The last event: the task ended at `pos`, with `msg`.
    pub fn finish_at(&self, pos: u64, msg: &str) {
        {
            let mut s = self.state();
            if s.done {
                return;
            }
            s.pos = pos;
            s.done = true;
        }
        self.emit(msg, true);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn emit(&self, msg: &str, done: bool) {
        let (pos, len, elapsed) = {
            let s = self.state();
            (s.pos, s.len, s.started.elapsed())
        };
        let t = &self.0;
        match t.style {
            Style::Hidden => {}
            Style::Bars => {
                if let Some(bar) = &t.bar {
                    bar.set_position(pos);
                    let msg = printable(msg);
                    if done {
                        // Where it ended, not full: a search stops where the memory did.
                        bar.abandon_with_message(msg);
                    } else {
                        bar.set_message(msg);
                    }
                }
            }
            Style::Lines => {
                let of = len.map(|l| format!("/{l}")).unwrap_or_default();
                let unit = if t.unit.is_empty() {
                    String::new()
                } else {
                    format!(" {}", t.unit)
                };
                // A task with nothing to count shows its time alone.
                let at = if len.is_none() && t.unit.is_empty() {
                    String::new()
                } else {
                    format!(": {pos}{of}{unit}")
                };
                let end = if done { " (done)" } else { "" };
                let left = match (t.eta && !done, len) {
                    (true, Some(len)) => time_left(pos, len, elapsed)
                        .map(|s| format!(", about {} left", short_duration(s)))
                        .unwrap_or_default(),
                    _ => String::new(),
                };
                let line = format!(
                    "{}{at} after {:.1} s{left}: {}{end}",
                    t.name,
                    elapsed.as_secs_f64(),
                    msg
                );
                self.write_line(&printable(&line));
            }
            Style::Events => {
                let event = Event {
                    task: t.name.clone(),
                    pos,
                    len,
                    unit: t.unit.clone(),
                    msg: msg.to_owned(),
                    done,
                };
                self.write_line(&event.to_line());
            }
        }
    }

    fn write_line(&self, line: &str) {
        let mut sink = self.0.sink.lock().unwrap_or_else(PoisonError::into_inner);
        // Progress must never stop the work: a closed stderr only loses the line.
        let _ = writeln!(sink, "{line}");
        let _ = sink.flush();
    }
}

/// The time left for `len - pos` more items at the rate of the `pos` done in `elapsed`; `None`
/// before the first.
fn time_left(pos: u64, len: u64, elapsed: Duration) -> Option<Duration> {
    if pos == 0 {
        return None;
    }
    let rest = len.saturating_sub(pos);
    Some(elapsed.mul_f64(rest as f64 / pos as f64))
}

/// `1h02m`, `3m05s`, `42s`: a time left to the second.
fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

/// `text` with every control character (escape sequences, carriage returns, newlines) turned
/// into a space: a plain line stays one plain line.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn lines_are_one_printable_line_per_event() {
        let out = Buffer::default();
        let p = Progress::with_writer(Style::Lines, Box::new(out.clone()));
        let t = p.task("cap device 0", Some(10000), "MiB");
        t.update(1024, "+1024 MiB ok");
        t.update(2048, "+1024 MiB \x1b[31mok\r\n");
        t.finish("refused at 2048 MiB");
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("cap device 0: 1024/10000 MiB after "),
            "{text}"
        );
        assert!(lines[2].ends_with("refused at 2048 MiB (done)"), "{text}");
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
    }

    #[test]
    fn a_childs_events_are_relayed_and_stripped_from_its_stderr() {
        let child_out = Buffer::default();
        let child = Progress::with_writer(Style::Events, Box::new(child_out.clone()));
        let t = child.task("audit", None, "paths");
        t.inc("cuMemAlloc_v2: capped");
        t.set_len(9);
        t.inc("cuMemAllocPitch_v2: capped");
        let stderr = format!("[HAMI-core Msg] hello\n{}", child_out.text());

        let parent_out = Buffer::default();
        let parent = Progress::with_writer(Style::Lines, Box::new(parent_out.clone()));
        let relayed = stderr.lines().filter(|l| parent.relay(l)).count();
        assert_eq!(relayed, 2);
        let shown = parent_out.text();
        assert!(shown.contains("audit: 1 paths after "), "{shown}");
        assert!(
            shown.contains("audit: 2/9 paths after ") && shown.contains("cuMemAllocPitch_v2"),
            "{shown}"
        );
        assert_eq!(strip_events(&stderr), "[HAMI-core Msg] hello\n");
        // The parent's own handle of the same task continues where the child left it.
        let (pos, len) = parent.task_position("audit");
        assert_eq!((pos, len), (2, Some(9)));
    }

    #[test]
    fn ticks_write_nothing_and_log_lines_are_plain() {
        let out = Buffer::default();
        let p = Progress::with_writer(Style::Lines, Box::new(out.clone()));
        let t = p.task("pod a Ready", Some(600), "s");
        t.update(0, "Pending: ContainerCreating");
        t.tick(5);
        t.tick(6);
        assert_eq!(t.position(), (6, Some(600)));
        p.log("watch for pod a: closed\x1b[0m; resuming");
        t.finish("Ready");
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[1], "watch for pod a: closed [0m; resuming");
        assert!(
            lines[2].starts_with("pod a Ready: 6/600 s after ")
                && lines[2].ends_with(": Ready (done)"),
            "{text}"
        );
        Progress::hidden().log("nothing");
        let uncounted = p.task("image pull for a", None, "");
        assert!(!uncounted.is_done());
        uncounted.finish("Pulled");
        assert!(uncounted.is_done());
        assert!(
            out.text()
                .lines()
                .last()
                .unwrap()
                .starts_with("image pull for a after "),
            "{}",
            out.text()
        );
    }

    #[test]
    fn a_counter_says_how_long_is_left_once_an_item_is_done() {
        let out = Buffer::default();
        let p = Progress::with_writer(Style::Lines, Box::new(out.clone()));
        let t = p.counter("fleet", 4, "cards");
        t.update(0, "2 in flight");
        std::thread::sleep(Duration::from_millis(20));
        t.update(1, "2 in flight, 0 not verified");
        t.show(2, "moves a bar only");
        t.finish_at(4, "4 verified");
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "show writes no line: {text}");
        assert!(
            lines[0].starts_with("fleet: 0/4 cards after ") && !lines[0].contains("left"),
            "no estimate before the first card: {text}"
        );
        assert!(
            lines[1].contains(" s, about ") && lines[1].contains("s left: 2 in flight"),
            "{text}"
        );
        assert!(
            lines[2].ends_with(": 4 verified (done)") && !lines[2].contains("left"),
            "{text}"
        );
        assert_eq!(t.position(), (4, Some(4)));
        // A plain task has no estimate.
        let plain = p.task("pod x to start", Some(600), "s");
        plain.update(5, "Pending");
        assert!(!out.text().lines().last().unwrap().contains("left"));
    }

    #[test]
    fn time_left_is_the_rate_so_far_and_reads_short() {
        assert_eq!(time_left(0, 10, Duration::from_secs(5)), None);
        assert_eq!(
            time_left(2, 10, Duration::from_secs(5)),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            time_left(10, 10, Duration::from_secs(5)),
            Some(Duration::ZERO)
        );
        assert_eq!(short_duration(Duration::from_secs(42)), "42s");
        assert_eq!(short_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(short_duration(Duration::from_secs(3720)), "1h02m");
    }

    #[test]
    fn without_tasks_hides_the_tasks_and_keeps_the_log() {
        let out = Buffer::default();
        let p = Progress::with_writer(Style::Lines, Box::new(out.clone()));
        let nested = p.without_tasks();
        let t = nested.task("pod a to start", Some(60), "s");
        t.update(3, "Pending");
        t.finish("Running");
        assert!(t.is_done());
        assert_eq!(t.position(), (3, Some(60)));
        nested.log("a retry");
        p.task("fleet", Some(1), "cards").finish_at(1, "done");
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0], "a retry");
        assert!(lines[1].starts_with("fleet: 1/1 cards after "), "{text}");
    }

    #[test]
    fn a_line_that_only_looks_like_an_event_is_not_one() {
        let p = Progress::hidden();
        assert!(!p.relay("lab-progress not json"));
        assert!(!p.relay("some other line"));
        assert_eq!(
            strip_events("a\nlab-progress {}\nb"),
            "a\nb",
            "every event line goes, even a malformed one"
        );
    }

    #[test]
    fn plain_output_is_chosen_when_asked_or_without_a_terminal() {
        assert_eq!(Style::for_stderr(true), Style::Lines);
        // Under `cargo test` stderr is captured (a pipe), never a terminal.
        if !std::io::stderr().is_terminal() {
            assert_eq!(Style::for_stderr(false), Style::Lines);
        }
    }

    impl Progress {
        fn task_position(&self, name: &str) -> (u64, Option<u64>) {
            self.tasks.lock().unwrap()[name].position()
        }
    }
}
