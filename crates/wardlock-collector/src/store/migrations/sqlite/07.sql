-- A workstation's group is IT's decision: an enrollment secret enrolls into one group,
-- an administrator's approval may move a workstation to another.
ALTER TABLE enroll_secrets ADD COLUMN grp TEXT;
ALTER TABLE reenroll_approvals ADD COLUMN grp TEXT;
