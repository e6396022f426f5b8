//! The chat platform a workspace lives on: where its scheduled messages must go.

/// A chat platform with an adapter that can send scheduled messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Platform {
    Discord,
    Slack,
}

impl Platform {
    /// The name stored and logged.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Discord => "discord",
            Platform::Slack => "slack",
        }
    }

    /// The platform a stored name means; None for a name this build does not know.
    pub fn parse(name: &str) -> Option<Platform> {
        match name {
            "discord" => Some(Platform::Discord),
            "slack" => Some(Platform::Slack),
            _ => None,
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_name_reads_back_as_its_platform() {
        for p in [Platform::Discord, Platform::Slack] {
            assert_eq!(Platform::parse(p.as_str()), Some(p));
        }
        assert_eq!(Platform::parse("console"), None);
    }
}
