//! The flags that shape the pod mutation, shared by `inject` and `webhook serve|review`: one
//! [`keepalive_shim_kube::Config`] from them, checked once, so that the offline mutation and the
//! webhook's give a pod the same.

use keepalive_shim_kube::{Config, Delivery, PullPolicy, Resources};

/// How pods are mutated.
#[derive(clap::Args, Clone, Debug)]
pub struct MutationArgs {
    /// The keepalive-shim image the init container (or image volume) comes from [default:
    /// keepalive-shim:VERSION]: a registry's copy, such as registry.example.com/keepalive-shim:0.1.0.
    #[arg(long, value_name = "IMAGE")]
    image: Option<String>,
    /// The image's pull policy: Always, IfNotPresent or Never.
    #[arg(long, value_name = "POLICY", default_value = "IfNotPresent")]
    pull_policy: String,
    /// How the library reaches the containers: copy (an init container copies it into an
    /// emptyDir volume; every Kubernetes) or image-volume (the image mounted as a volume; 1.31
    /// alpha, on by default from 1.35).
    #[arg(long, value_name = "HOW", default_value = "copy")]
    delivery: String,
    /// The init container's CPU request, memory request, CPU limit and memory limit.
    #[arg(long, value_name = "QTY", default_value = "10m")]
    init_cpu_request: String,
    #[arg(long, value_name = "QTY", default_value = "16Mi")]
    init_memory_request: String,
    #[arg(long, value_name = "QTY", default_value = "100m")]
    init_cpu_limit: String,
    #[arg(long, value_name = "QTY", default_value = "32Mi")]
    init_memory_limit: String,
    /// The init container's user id, or `none` to leave it to the platform (OpenShift assigns
    /// one from the namespace's range).
    #[arg(long, value_name = "UID|none", default_value = "65532")]
    init_user: String,
    /// Where the library's volume is mounted in every container.
    #[arg(long, value_name = "PATH", default_value = keepalive_shim_kube::DEFAULT_MOUNT_PATH)]
    mount_path: String,
}

impl MutationArgs {
    /// The mutation's configuration, checked: an error names the flag's value and what it
    /// accepts.
    pub fn config(&self) -> Result<Config, String> {
        let defaults = Config::default();
        let user = match self.init_user.as_str() {
            "none" => None,
            n => Some(n.parse::<u32>().map_err(|_| {
                format!("--init-user \"{n}\" is not a user id (a whole number) or none")
            })?),
        };
        let config = Config {
            image: self.image.clone().unwrap_or(defaults.image),
            pull_policy: PullPolicy::parse(&self.pull_policy).map_err(|e| e.to_string())?,
            delivery: Delivery::parse(&self.delivery).map_err(|e| e.to_string())?,
            resources: Resources {
                cpu_request: self.init_cpu_request.clone(),
                memory_request: self.init_memory_request.clone(),
                cpu_limit: self.init_cpu_limit.clone(),
                memory_limit: self.init_memory_limit.clone(),
            },
            run_as_user: user,
            mount_path: self.mount_path.clone(),
            ..defaults
        };
        config.check().map_err(|e| e.to_string())?;
        Ok(config)
    }
}
