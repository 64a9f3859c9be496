use super::*;

fn machine(text: &str) -> Result<PolicyDocument, PolicyError> {
    PolicyDocument::parse("policy.toml", Layer::Machine, text)
}

#[test]
fn built_in_defaults_are_valid_and_hospital_safe() {
    let p = Policy::layered(&[]).unwrap();
    assert_eq!(p.lock.idle_timeout, Duration::from_secs(300));
    assert_eq!(p.lock.warning, Duration::from_secs(30));
    assert_eq!(p.lockout.max_failures, 5);
    assert!(p.unlock.methods.contains(&UnlockMethod::PinTotp));
    assert!(p.validate().is_empty());
}

#[test]
fn durations_are_written_humanly() {
    let doc = machine("[lock]\nidle_timeout = \"2m 30s\"\nwarning = \"20s\"\n").unwrap();
    let p = Policy::layered(&[doc]).unwrap();
    assert_eq!(p.lock.idle_timeout, Duration::from_secs(150));
    assert!(p.to_toml().contains("idle_timeout = \"2m 30s\""));
}

#[test]
fn out_of_range_value_names_field_and_allowed_range() {
    let err = machine("[lock]\nidle_timeout = \"0s\"\n").unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    let p = &err.problems[0];
    assert_eq!(p.field, "lock.idle_timeout");
    assert_eq!(p.message, "must be between 15s and 8h, got 0s");
    assert_eq!(p.location, Some((2, 1)));
    assert!(err
        .to_string()
        .contains("policy.toml:2:1: lock.idle_timeout: must be between 15s and 8h, got 0s"));
}

#[test]
fn unknown_key_is_an_error_not_ignored() {
    let err = machine("[lock]\nidle_timeout = \"5m\"\nidle_timout = \"1h\"\n").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("idle_timout"), "{text}");
    assert!(text.contains("policy.toml:3:"), "{text}");
    let err = machine("[locks]\nidle_timeout = \"5m\"\n").unwrap_err();
    assert_eq!(err.problems[0].field, "locks");
    assert!(err.problems[0].message.contains("allowed sections are"));
}

#[test]
fn wrong_type_names_the_field() {
    let err = machine("[lockout]\nmax_failures = \"five\"\n").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("lockout"), "{text}");
    assert!(text.contains("max_failures") || text.contains("invalid type"), "{text}");
    assert_eq!(err.problems[0].location.map(|l| l.0), Some(2), "{text}");
}

#[test]
fn bad_toml_reports_line() {
    let err = machine("[lock]\nidle_timeout = \"5m\n").unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert_eq!(err.problems[0].location.map(|l| l.0), Some(2), "{err}");
}

#[test]
fn every_problem_is_listed_not_just_the_first() {
    let err = machine(
        "[lock]\nidle_timeout = \"9h\"\n[lockout]\nmax_failures = \"x\"\n[pin]\nmin_length = 2\n[bogus]\n",
    )
    .unwrap_err();
    let mut fields: Vec<&str> = err.problems.iter().map(|p| p.field.as_str()).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["bogus", "lock.idle_timeout", "lockout.max_failures", "pin.min_length"], "{err}");
    let lines: Vec<usize> = err.problems.iter().filter_map(|p| p.location.map(|l| l.0)).collect();
    assert_eq!(lines.len(), 4, "every problem has a line: {err}");
}

#[test]
fn mangled_policies_never_panic_and_always_say_why() {
    let template = include_str!("../../../../installers/linux/policy.toml");
    let replacements: &[&[u8]] = &[
        b"\"",
        b"=",
        b"[",
        b"]",
        b"\n",
        b"0",
        b"-1",
        b"x",
        b"",
        b"99999999999999999999",
        "é—".as_bytes(),
        b"\xff",
    ];
    // A fixed pseudo-random walk, so a failure reproduces.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    for _ in 0..2000 {
        let mut bytes = template.as_bytes().to_vec();
        for _ in 0..1 + next(3) {
            let at = next(bytes.len());
            let len = next(4).min(bytes.len() - at);
            bytes.splice(at..at + len, replacements[next(replacements.len())].iter().copied());
        }
        let text = String::from_utf8_lossy(&bytes);
        match PolicyDocument::parse("p.toml", Layer::Machine, &text).and_then(|d| Policy::layered(&[d])) {
            Ok(policy) => assert!(policy.validate().is_empty()),
            Err(e) => {
                assert!(!e.problems.is_empty());
                assert!(e.problems.iter().all(|p| !p.message.is_empty()), "{e}");
            }
        }
    }
}

#[test]
fn warning_must_be_shorter_than_timeout() {
    let doc = machine("[lock]\nidle_timeout = \"20s\"\nwarning = \"30s\"\n").unwrap();
    let err = Policy::layered(&[doc]).unwrap_err();
    assert_eq!(err.problems[0].field, "lock.warning");
}

#[test]
fn layers_override_key_by_key() {
    let m = machine("[workstation]\ngroup = \"icu\"\n[lock]\nidle_timeout = \"10m\"\nwarning = \"45s\"\n")
        .unwrap();
    let c = PolicyDocument::parse(
        "central",
        Layer::Central,
        "[lock]\nidle_timeout = \"3m\"\n[lock.groups.icu]\nidle_timeout = \"2m\"\n",
    )
    .unwrap();
    let p = Policy::layered(&[m, c]).unwrap();
    assert_eq!(p.lock.idle_timeout, Duration::from_secs(180));
    assert_eq!(p.lock.warning, Duration::from_secs(45), "machine value kept where central is silent");
    assert_eq!(p.lock_timing(), (Duration::from_secs(120), Duration::from_secs(45)));
    assert_eq!(p.lock_timing_for(Some("er")), (Duration::from_secs(180), Duration::from_secs(45)));
}

#[test]
fn central_policy_cannot_choose_its_own_signers_or_endpoint() {
    let err =
        PolicyDocument::parse("central", Layer::Central, "[sync]\ntrusted_keys = [\"AAAA\"]\n").unwrap_err();
    assert_eq!(err.problems[0].field, "sync.trusted_keys");
    assert!(machine("[sync]\ntrusted_keys = []\n").is_ok());
}

#[test]
fn a_layer_is_judged_with_the_layer_below_it() {
    // Valid only because the machine layer shortened the warning.
    let m = machine("[lock]\nwarning = \"10s\"\n").unwrap();
    let c = PolicyDocument::parse("central", Layer::Central, "[lock]\nidle_timeout = \"20s\"\n").unwrap();
    let p = Policy::layered(&[m, c.clone()]).unwrap();
    assert_eq!(p.lock_timing(), (Duration::from_secs(20), Duration::from_secs(10)));
    // Over the defaults alone (30 s warning) the same central policy is refused.
    assert_eq!(Policy::layered(&[c]).unwrap_err().problems[0].field, "lock.warning");
}

#[test]
fn merged_layers_are_validated_together() {
    let m = machine("[lock]\nidle_timeout = \"1m\"\nwarning = \"40s\"\n").unwrap();
    let c = PolicyDocument::parse("central", Layer::Central, "[lock]\nidle_timeout = \"35s\"\n").unwrap();
    let err = Policy::layered(&[m, c]).unwrap_err();
    assert_eq!(err.problems[0].field, "lock.warning");
}

#[test]
fn policy_hash_changes_with_content() {
    let a = Policy::default();
    let mut b = Policy::default();
    b.lock.idle_timeout = Duration::from_secs(120);
    assert_ne!(a.hash(), b.hash());
    assert_eq!(a.hash(), Policy::default().hash());
}

#[test]
fn totp_algorithm_names_are_case_insensitive_enough() {
    let p = Policy::layered(&[machine("[totp]\nalgorithm = \"sha256\"\n").unwrap()]).unwrap();
    assert_eq!(p.totp.algorithm, TotpAlgorithm::Sha256);
    assert!(machine("[totp]\nalgorithm = \"md5\"\n").is_err());
}

#[test]
fn an_unguarded_session_ends_in_a_logoff_by_default() {
    let p = Policy::layered(&[]).unwrap();
    assert_eq!(p.lock.when_unguarded, Unguarded::Logoff);
    assert_eq!(p.lock.escalation_grace, Duration::from_secs(10));
    let err = machine("[lock]\nescalation_grace = \"1s\"\n").unwrap_err();
    assert_eq!(err.problems[0].field, "lock.escalation_grace", "{err}");
    assert!(machine("[lock]\nwhen_unguarded = \"os_lock\"\n").is_err(), "os_lock is no new value");
}

#[test]
fn the_old_escalation_keys_are_read_as_when_unguarded() {
    let layered = |text: &str| Policy::layered(&[machine(text).unwrap()]).unwrap().lock.when_unguarded;
    assert_eq!(
        layered("[lock]\non_guard_lost = \"os_lock\"\non_grab_failure = \"os_lock\"\n"),
        Unguarded::Logoff
    );
    assert_eq!(
        layered("[lock]\non_guard_lost = \"audit_only\"\non_grab_failure = \"audit_only\"\n"),
        Unguarded::AuditOnly
    );
    assert_eq!(
        layered("[lock]\non_guard_lost = \"audit_only\"\non_grab_failure = \"os_lock\"\n"),
        Unguarded::Logoff,
        "the more protective of the two"
    );
    assert_eq!(
        layered("[lock]\non_guard_lost = \"os_lock\"\nwhen_unguarded = \"lock_only\"\n"),
        Unguarded::LockOnly,
        "the new key wins"
    );
    let err = machine("[lock]\non_guard_lost = \"shrug\"\n").unwrap_err();
    assert!(err.problems[0].field.starts_with("lock"), "{err}");
}

#[test]
fn only_the_machine_policy_names_the_guard_executable() {
    let text = "[service]\nguard_executable = \"/tmp/evil\"\n";
    assert!(machine(text).is_ok());
    let err = PolicyDocument::parse("central", Layer::Central, text).unwrap_err();
    assert_eq!(err.problems[0].field, "service.guard_executable", "{err}");
}

mod phi {
    use super::super::*;

    fn check(text: &str) -> Result<Policy, PolicyError> {
        let doc = PolicyDocument::parse("policy.toml", Layer::Machine, text)?;
        Policy::layered(&[doc]).map(ValidPolicy::into_inner)
    }

    fn fields(text: &str) -> Vec<String> {
        check(text).unwrap_err().problems.into_iter().map(|p| p.field).collect()
    }

    #[test]
    fn tiers_and_apps_with_class_and_exe_matchers_are_accepted() {
        let p = check(
            r#"
            [phi]
            on_switch = "keep_hidden"
            close_grace = "5s"
            [phi.tiers.ehr]
            idle_timeout = "28m"
            warning = "1m"
            [phi.tiers.pacs]
            idle_timeout = "5m"
            warning = "30s"
            [[phi.apps]]
            name = "EHR"
            wm_class = "EHR"
            tier = "ehr"
            [[phi.apps]]
            name = "PACS"
            exe = "/opt/pacs/bin/viewer"
            tier = "pacs"
            [[phi.apps]]
            name = "Old"
            match = "old-client"
            "#,
        )
        .unwrap();
        assert_eq!(p.phi.tiers["ehr"].idle_timeout, Duration::from_secs(28 * 60));
        assert_eq!(p.phi.on_switch, PhiSwitch::KeepHidden);
        assert_eq!(p.phi.apps[2].matches.as_deref(), Some("old-client"));
    }

    #[test]
    fn an_empty_matcher_an_unknown_tier_and_a_tier_out_of_range_are_named() {
        // A value out of range is found in the layer alone, before the rules across fields.
        let f = fields("[phi.tiers.pacs]\nidle_timeout = \"5s\"\nwarning = \"0s\"\n");
        assert_eq!(f, vec!["phi.tiers.pacs.idle_timeout".to_owned()]);
        let f = fields(
            r#"
            [phi.tiers.lab]
            idle_timeout = "2m"
            warning = "2m"
            [[phi.apps]]
            name = "PACS"
            wm_class = "Pacs"
            tier = "pacs-viewer"
            "#,
        );
        assert_eq!(f, vec!["phi.apps[0].tier".to_owned(), "phi.tiers.lab.warning".to_owned()]);
        let f = fields("[[phi.apps]]\nname = \"EHR\"\nwm_class = \" \"\n");
        assert_eq!(f, vec!["phi.apps[0]".to_owned()]);
        let message =
            check("[[phi.apps]]\nname = \"X\"\nwm_class = \"X\"\ntier = \"nope\"\n").unwrap_err().to_string();
        assert!(
            message.contains("unknown tier \"nope\"") && message.contains("[phi.tiers.nope]"),
            "{message}"
        );
    }

    #[test]
    fn a_tier_defined_in_the_machine_layer_may_be_used_by_the_central_one() {
        let machine = PolicyDocument::parse(
            "machine",
            Layer::Machine,
            "[phi.tiers.ehr]\nidle_timeout = \"28m\"\nwarning = \"1m\"\n",
        )
        .unwrap();
        let central = PolicyDocument::parse(
            "central",
            Layer::Central,
            "[phi]\napps = [{ name = \"EHR\", wm_class = \"EHR\", tier = \"ehr\" }]\n",
        )
        .unwrap();
        assert!(Policy::layered(&[machine, central]).is_ok());
    }

    #[test]
    fn minimize_of_earlier_releases_reads_as_hide() {
        assert_eq!(check("[phi]\non_lock = \"minimize\"\n").unwrap().phi.on_lock, PhiAction::Hide);
    }

    fn window(instance: &str, class: &str, exe: Option<&str>) -> WindowIdentity {
        WindowIdentity { instance: instance.into(), class: class.into(), exe: exe.map(str::to_owned) }
    }

    fn app(wm_class: Option<&str>, exe: Option<&str>, legacy: Option<&str>) -> PhiApp {
        PhiApp {
            name: "A".into(),
            wm_class: wm_class.map(str::to_owned),
            exe: exe.map(str::to_owned),
            matches: legacy.map(str::to_owned),
            tier: None,
        }
    }

    #[test]
    fn matchers_take_instance_or_class_and_an_exe_path_or_file_name_and_all_given_must_match() {
        let xterm = window("xterm", "EHR", Some("/usr/bin/xterm"));
        assert!(app(Some("EHR"), None, None).matches(&xterm));
        assert!(app(Some("xterm"), None, None).matches(&xterm));
        assert!(!app(Some("ehr"), None, None).matches(&xterm), "case matters, as in X");
        assert!(app(None, Some("xterm"), None).matches(&xterm));
        assert!(app(None, Some("/usr/bin/xterm"), None).matches(&xterm));
        assert!(!app(None, Some("/opt/xterm"), None).matches(&xterm));
        assert!(!app(Some("EHR"), Some("/opt/ehr"), None).matches(&xterm), "both must match");
        assert!(app(None, None, Some("EHR")).matches(&xterm));
        assert!(app(None, None, Some("xterm")).matches(&window("a", "b", Some("/usr/bin/xterm"))));
        assert!(!app(None, None, None).matches(&xterm), "no matcher matches nothing");
        assert!(!app(None, Some("xterm"), None).matches(&window("xterm", "EHR", None)), "unknown exe");
    }
}

#[test]
fn break_glass_without_a_pin_and_an_open_ended_lockout_allowance_are_refused() {
    let err = machine("[emergency]\nrequire_pin = false\nmax_failures_during_lockout = 6\n").unwrap_err();
    let fields: Vec<&str> = err.problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["emergency.max_failures_during_lockout", "emergency.require_pin"], "{err}");
    assert!(err.to_string().contains("must be between 1 and 5, got 6"), "{err}");
    assert!(err.to_string().contains("must be true"), "{err}");

    let p = Policy::layered(&[machine("[unlock]\nmethods = [\"pin_totp\"]\n").unwrap()]).unwrap();
    assert!(p.emergency.requires_totp(&p.unlock), "an MFA ward stays MFA in an emergency");
    assert!(!Policy::default().emergency.requires_totp(&Policy::default().unlock));
    let p = Policy::layered(&[machine(
        "[unlock]\nmethods = [\"pin_totp\"]\n[emergency]\nrequire_totp = false\n",
    )
    .unwrap()])
    .unwrap();
    assert!(!p.emergency.requires_totp(&p.unlock), "IT may decide otherwise, explicitly");
}

#[test]
fn the_built_in_defaults_pass_every_rule_so_valid_policy_may_default_to_them() {
    assert_eq!(Policy::default().validate(), Vec::<(String, String)>::new());
    assert_eq!(*ValidPolicy::default(), Policy::default());
}
