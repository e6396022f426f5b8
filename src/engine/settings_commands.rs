//! `/lastmile config` (the workspace's settings, admins only) and `/lastmile timezone` (a person's own zone).

use minijinja::context;

use super::{Engine, Reply, Request};
use crate::domain::rules;
use crate::domain::settings::{SETTING_NAMES, SettingError};
use crate::prompts::{Key, echo};
use crate::store::StoreError;

impl Engine {
    pub(super) async fn config_command(
        &self,
        req: &Request,
        setting: Option<String>,
        value: Option<String>,
    ) -> Result<Vec<Reply>, StoreError> {
        let mut settings = self.store().settings(&req.workspace).await?;
        // Admins are one notion: the platform's (Manage Server, `console.admins`) and the workspace's `admins`.
        if !(rules::Actor { user: &req.user, platform_admin: req.admin }).is_admin(&settings) {
            return Ok(vec![self.ephemeral(req, self.prompts().text(Key::ConfigNotAllowed))]);
        }
        let show = |s: &crate::domain::WorkspaceSettings| {
            let rows: Vec<_> = s.show().into_iter().map(|(name, value)| context! { name, value }).collect();
            self.prompts().render(Key::ConfigShow, context! { settings => rows })
        };
        let (Some(setting), Some(value)) = (setting.clone(), value) else {
            if let Some(setting) = setting
                && !SETTING_NAMES.contains(&setting.as_str())
            {
                return Ok(vec![self.unknown_setting(req, &setting)]);
            }
            return Ok(vec![self.ephemeral(req, show(&settings))]);
        };
        match settings.set(&setting, &value) {
            Ok(()) => {
                self.store().save_settings(&req.workspace, &settings, req.now).await?;
                // Cadence, hours and days change when messages are due: every pilot is looked at again.
                self.store().reconsider_schedule(&req.workspace, req.now).await?;
                let text = self.prompts().render(Key::ConfigSaved, context! { setting, value => value.trim() });
                Ok(vec![self.ephemeral(req, text)])
            }
            Err(SettingError::Unknown) => Ok(vec![self.unknown_setting(req, &setting)]),
            Err(SettingError::Invalid) => Ok(vec![self.ephemeral(
                req,
                self.prompts().render(Key::ConfigInvalid, context! { setting, value => echo(&value) }),
            )]),
        }
    }

    /// `/lastmile timezone [zone]`: anyone may set their own.
    pub(super) async fn timezone_command(&self, req: &Request, zone: Option<String>) -> Result<Vec<Reply>, StoreError> {
        let Some(zone) = zone else {
            let own = self.store().user_timezone(&req.workspace, &req.user).await?;
            let ws_zone = self.store().settings(&req.workspace).await?.timezone;
            let text = self
                .prompts()
                .render(Key::TimezoneShow, context! { own => own.is_some(), zone => own.unwrap_or(ws_zone) });
            return Ok(vec![self.ephemeral(req, text)]);
        };
        let Ok(tz) = zone.parse::<chrono_tz::Tz>() else {
            return Ok(vec![
                self.ephemeral(req, self.prompts().render(Key::TimezoneInvalid, context! { zone => echo(&zone) })),
            ]);
        };
        self.store().set_user_timezone(&req.workspace, &req.user, tz.name(), req.now).await?;
        self.store().reconsider_owner_schedule(&req.workspace, &req.user, req.now).await?;
        Ok(vec![self.ephemeral(req, self.prompts().render(Key::TimezoneSaved, context! { zone => tz.name() }))])
    }

    fn unknown_setting(&self, req: &Request, setting: &str) -> Reply {
        let suggestion = crate::commands::closest(setting, SETTING_NAMES.iter().copied());
        let text = self.prompts().render(
            Key::ConfigUnknown,
            context! { setting => echo(setting), suggestion, settings => SETTING_NAMES.join(", ") },
        );
        self.ephemeral(req, text)
    }
}
