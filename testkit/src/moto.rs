//! A real S3 API server for the object-storage tests: moto's server mode, started as a child
//! process on a free local port and killed when the handle is dropped; buckets, clients, table
//! options and secrets for it, and the fixtures uploaded to it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// Credentials moto accepts (it checks none; the client still signs every request).
pub const ACCESS_KEY: &str = "test";
pub const SECRET_KEY: &str = "test";
pub const REGION: &str = "us-east-1";

/// A running `moto_server`; killed on drop.
pub struct Moto {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Moto {
    /// Starts moto on a free port and waits until it answers. `None` (after printing why) when
    /// moto is not installed, so that a fresh clone without it still passes.
    pub fn start() -> Option<Self> {
        let installed = Command::new("moto_server")
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            // CI installs moto (.ci/run): there, a missing server must fail, not skip.
            assert!(
                std::env::var_os("CI").is_none(),
                "moto_server not found, but CI is set: .ci/run should have installed moto[server]"
            );
            eprintln!("skipping: moto_server not found (pip install 'moto[server]')");
            return None;
        }
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("moto.log");
        // moto logs every request: into a file, never into a pipe nobody reads.
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("moto_server runs");
        let mut moto = Self {
            child,
            port,
            log,
            _dir: dir,
        };
        moto.wait_until_up();
        Some(moto)
    }

    fn wait_until_up(&mut self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "moto_server exited ({status}) before answering on port {}:\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer on port {} within 60 s:\n{}",
                self.port,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The `GET` requests the server has answered for objects under `prefix`
    /// (`/<bucket>/<key prefix>`), as its request log has them: what was read, whoever read it.
    pub fn gets_under(&self, prefix: &str) -> Vec<String> {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let needle = format!("\"GET {prefix}");
        log.lines()
            .filter(|line| line.contains(&needle))
            .map(str::to_string)
            .collect()
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read(&self.log).unwrap_or_default();
        let start = log.len().saturating_sub(4000);
        String::from_utf8_lossy(&log[start..]).into_owned()
    }

    /// The server's process id (to pause it with SIGSTOP, as a stalled store).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:<port>`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket with a plain `PUT /<bucket>` (object_store cannot create buckets).
    pub fn create_bucket(&self, bucket: &str) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(
            stream,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "creating bucket {bucket} failed:\n{response}"
        );
    }

    /// An S3 client for `bucket`, configured explicitly (not from the environment).
    pub fn client(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        let store = AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_bucket_name(bucket)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_region(REGION)
            .build()
            .unwrap();
        Arc::new(store)
    }

    /// The `OPTIONS (...)` of an AUDIO table that reads from this server (the secret key comes
    /// from [`Moto::create_secret`], since table options are kept in the store).
    pub fn table_options(&self) -> String {
        format!(
            "OPTIONS ('aws.endpoint' '{}', 'aws.access_key_id' '{ACCESS_KEY}', \
             'aws.region' '{REGION}')",
            self.endpoint()
        )
    }

    /// The standard `AWS_*` variables that point a client at this server (for child processes).
    pub fn env(&self) -> [(&'static str, String); 5] {
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]
    }

    /// Points the standard `AWS_*` variables at this server, for code that reads them (a store
    /// given as `s3://...`). Call it while the test's thread is the only one of the process.
    pub fn export_env(&self) {
        for (key, value) in self.env() {
            // SAFETY: no other thread of this process reads the environment at this point.
            #[allow(unused_unsafe)]
            unsafe {
                std::env::set_var(key, value)
            };
        }
    }

    /// The statement that keeps this server's secret key outside the store.
    pub fn create_secret(&self) -> String {
        format!("CREATE OR REPLACE SECRET moto (TYPE s3, SECRET '{SECRET_KEY}')")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A local port nothing listens on now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Every file under `dir` (hidden ones included), as paths relative to `dir` with `/`.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap();
                let parts: Vec<_> = rel.iter().map(|p| p.to_str().unwrap()).collect();
                out.push(parts.join("/"));
            }
        }
    }
    out.sort();
    out
}

/// Uploads every file of `tests/data` (nesting, dot-files and non-audio files included) under
/// `prefix` in `store`; returns the relative paths uploaded.
pub async fn upload_fixtures(store: &Arc<dyn ObjectStore>, prefix: &str) -> Vec<String> {
    let dir = crate::paths::fixtures();
    let files = files_under(&dir);
    for rel in &files {
        upload(store, &dir.join(rel), &format!("{prefix}/{rel}")).await;
    }
    files
}

/// Uploads the file at `path` as `key`.
pub async fn upload(store: &Arc<dyn ObjectStore>, path: &Path, key: &str) {
    let bytes = std::fs::read(path).unwrap();
    let key = ObjectPath::parse(key).unwrap();
    store.put(&key, PutPayload::from(bytes)).await.unwrap();
}
