//! The `device` setting: which compute device a stage runs its model and its training on.
//!
//! Only the name lives here (parsed, printed, compared), so that the pipeline loader and every
//! stage speak of devices without linking a tensor library; `monoscope-device` turns a
//! [`DeviceSpec`] into a burn device and says which ones this build and machine have.

use std::fmt;
use std::str::FromStr;

/// A compute device by name: `cpu`, `cuda`, `cuda:N`, `rocm`, `rocm:N`, `wgpu`, `wgpu:N`,
/// `vulkan`, `metal`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceSpec {
    /// The host CPU (burn's `flex` backend and monoscope's own kernels).
    #[default]
    Cpu,
    /// An NVIDIA GPU by index (0 when unnumbered).
    Cuda(usize),
    /// An AMD GPU through ROCm/HIP by index.
    Rocm(usize),
    /// wgpu's adapter: the best available when unnumbered, else the N-th discrete GPU.
    Wgpu(Option<usize>),
    /// wgpu pinned to Vulkan (the best adapter Vulkan offers).
    Vulkan,
    /// wgpu pinned to Metal.
    Metal,
}

impl DeviceSpec {
    /// The backend's name, as the cargo feature that compiles it is called (`cpu` is always
    /// there).
    pub fn backend(&self) -> &'static str {
        match self {
            DeviceSpec::Cpu => "cpu",
            DeviceSpec::Cuda(_) => "cuda",
            DeviceSpec::Rocm(_) => "rocm",
            DeviceSpec::Wgpu(_) => "wgpu",
            DeviceSpec::Vulkan => "vulkan",
            DeviceSpec::Metal => "metal",
        }
    }

    pub fn is_cpu(&self) -> bool {
        *self == DeviceSpec::Cpu
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cuda(i) | DeviceSpec::Rocm(i) if *i > 0 => {
                write!(f, "{}:{i}", self.backend())
            }
            DeviceSpec::Wgpu(Some(i)) => write!(f, "wgpu:{i}"),
            _ => f.write_str(self.backend()),
        }
    }
}

/// Why a device name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}`: not a device (expected cpu, cuda, cuda:N, rocm, rocm:N, wgpu, wgpu:N, vulkan or metal)"
)]
pub struct DeviceSpecError(pub String);

impl FromStr for DeviceSpec {
    type Err = DeviceSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || DeviceSpecError(s.to_string());
        let (name, index) = match s.split_once(':') {
            Some((name, index)) => {
                // Digits only: `usize::from_str` would also take a leading `+`.
                if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                (name, Some(index.parse::<usize>().map_err(|_| bad())?))
            }
            None => (s, None),
        };
        Ok(match (name, index) {
            ("cpu", None) => DeviceSpec::Cpu,
            ("cuda", i) => DeviceSpec::Cuda(i.unwrap_or(0)),
            ("rocm", i) => DeviceSpec::Rocm(i.unwrap_or(0)),
            ("wgpu", i) => DeviceSpec::Wgpu(i),
            ("vulkan", None) => DeviceSpec::Vulkan,
            ("metal", None) => DeviceSpec::Metal,
            _ => return Err(bad()),
        })
    }
}

impl serde::Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in [
            "cpu", "cuda", "cuda:1", "rocm", "rocm:2", "wgpu", "wgpu:0", "vulkan", "metal",
        ] {
            let spec: DeviceSpec = name.parse().unwrap();
            assert_eq!(spec.to_string(), name);
        }
        assert_eq!("cuda:0".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!(DeviceSpec::Cuda(0).to_string(), "cuda");
    }

    #[test]
    fn refuses_what_is_not_a_device() {
        for name in [
            "", "gpu", "CUDA", "cuda:", "cuda:+1", "cuda:-1", "cuda:x", "cpu:0", "metal:1",
            "cuda:1:2", " cuda",
        ] {
            let err = name.parse::<DeviceSpec>().unwrap_err();
            assert!(err.to_string().contains(&format!("`{name}`")), "{err}");
        }
    }
}
