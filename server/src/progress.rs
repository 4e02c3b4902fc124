//! A progress bar for scans that open many files, shown on a terminal only.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use audiolake::ScanProgress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Shown only once a scan has run this long, so quick queries print nothing extra.
const DELAY: Duration = Duration::from_millis(700);

pub struct Bar {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Starts watching `progress`; nothing is drawn unless stderr is a terminal.
pub fn spawn(progress: Arc<ScanProgress>) -> Bar {
    if !std::io::stderr().is_terminal() {
        return Bar {
            stop: None,
            task: None,
        };
    }
    let (stop, mut stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        let (start_done, start_total) = progress.snapshot();
        tokio::select! {
            _ = &mut stopped => return,
            _ = tokio::time::sleep(DELAY) => {}
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} files {pos}/{len} [{bar:30}] {per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        loop {
            let (done, total) = progress.snapshot();
            bar.set_length(total - start_total);
            bar.set_position(done - start_done);
            tokio::select! {
                _ = &mut stopped => break,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        bar.finish_and_clear();
    });
    Bar {
        stop: Some(stop),
        task: Some(task),
    }
}

impl Bar {
    pub async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}
