//! Password verification off the shards' event loops.
//!
//! An argon2id check takes tens of milliseconds of CPU; done on a shard it would stall every other
//! client of that shard. A connection hands its check to a small pool of plain threads over a
//! bounded channel and awaits the answer on a one-shot channel, so its shard keeps serving other
//! clients meanwhile. When the queue is full the check is refused at once ("server unavailable"),
//! so a flood of CONNECTs costs bounded memory and the threads' CPU, never the shards'.

use std::sync::Arc;
use std::thread::JoinHandle;

use crate::auth::PasswordFile;

/// One password check.
struct Job {
    passwords: Arc<PasswordFile>,
    username: String,
    password: Vec<u8>,
    reply: flume::Sender<bool>,
}

/// Why a check did not give an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("too many password checks pending")]
    Busy,
    #[error("the password verifier stopped")]
    Stopped,
}

/// The verifier threads and their queue. Dropping it ends the threads once the queue is empty.
pub struct Verifier {
    jobs: Option<flume::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Verifier {
    /// `threads` workers taking jobs from a queue of `pending_max`.
    pub fn start(threads: usize, pending_max: usize) -> Verifier {
        assert!(threads > 0 && pending_max > 0, "validated by config");
        let (jobs, queue) = flume::bounded::<Job>(pending_max);
        let threads = (0..threads)
            .filter_map(|index| {
                let queue = queue.clone();
                std::thread::Builder::new()
                    .name(format!("ringmq-verify-{index}"))
                    .spawn(move || {
                        while let Ok(job) = queue.recv() {
                            let ok = job.passwords.verify(&job.username, &job.password);
                            // The connection may be gone; nobody to tell then.
                            let _ = job.reply.send(ok);
                        }
                    })
                    .map_err(|error| tracing::error!(%error, "cannot start a verifier thread"))
                    .ok()
            })
            .collect();
        Verifier {
            jobs: Some(jobs),
            threads,
        }
    }

    /// Checks `password` for `username` on a verifier thread; the caller's task waits, its shard
    /// does not.
    pub async fn verify(
        &self,
        passwords: Arc<PasswordFile>,
        username: String,
        password: Vec<u8>,
    ) -> Result<bool, VerifyError> {
        let jobs = self.jobs.as_ref().ok_or(VerifyError::Stopped)?;
        if self.threads.is_empty() {
            return Err(VerifyError::Stopped);
        }
        let (reply, answer) = flume::bounded(1);
        let job = Job {
            passwords,
            username,
            password,
            reply,
        };
        jobs.try_send(job).map_err(|error| match error {
            flume::TrySendError::Full(_) => VerifyError::Busy,
            flume::TrySendError::Disconnected(_) => VerifyError::Stopped,
        })?;
        answer.recv_async().await.map_err(|_| VerifyError::Stopped)
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        self.jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        futures_lite::future::block_on(future)
    }

    #[test]
    fn verifies_on_threads_and_refuses_when_full() {
        // bob / hunter2, written by `mosquitto_passwd -H sha512`.
        let file = "bob:$6$hy4QqP0ohFrqAGur$wF1SB0GjnxaJPnoZJLkYwu2IYkXJwptnKLvo1NCTvpV3xiSCedOt9mjUvGPeiVRok2FkGBtPWghiwNRZJNGvMA==";
        let passwords = Arc::new(PasswordFile::parse(file, "test").unwrap());
        let verifier = Verifier::start(1, 4);
        let check = |username: &str, password: &[u8]| {
            block_on(verifier.verify(
                Arc::clone(&passwords),
                username.to_owned(),
                password.to_vec(),
            ))
        };
        assert_eq!(check("bob", b"hunter2"), Ok(true));
        assert_eq!(check("bob", b"hunter3"), Ok(false));
        assert_eq!(check("alice", b"hunter2"), Ok(false));
    }
}
