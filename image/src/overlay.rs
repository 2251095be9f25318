//! The rootfs overlay generated into every bundle for a board profile: the hardened
//! systemd unit, the sysusers entry for its user, the default config, the USB
//! provisioning mount (udev rule, mount helper, tmpfiles entry),
//! journald and logrotate limits, the kernel's socket buffer cap (sysctl), and on boards with directory slots the boot step.
//!
//! # The boot step on directory slots
//!
//! On U-Boot boards the bootloader chooses the slot and spends a trial boot's one try
//! (`BOOT_ORDER`, `BOOT_x_LEFT`). Boards whose slots are a directory (the simulated
//! profiles, simple boards without U-Boot's A/B support) have no bootloader that reads
//! the slot state, so the overlay ships [`BOOT_UNIT_PATH`]: a oneshot unit that runs
//! `branch-image boot --slots` ([`SLOTS_DIR`]) once per boot, before `branchd` (which
//! `Wants=` it: a broken state file is reported by the health check, not turned into
//! a box without phones). It runs once per boot, not per `branchd` restart, because a
//! restart must not spend the trial's try. Such bundles must carry `usr/bin/branch-image`:
//! [`required_binaries`] names it and `branch-image build` refuses a bundle without it.
//!
//! # USB sticks for provisioning
//!
//! `branchd` watches `/run/branchline/usb` ([`USB_MOUNT_BASE`], its `[provisioning]
//! watch`) and expects a stick mounted at `<watch>/<name>` followed by a touched
//! `<watch>/<name>.mounted` (a mount makes no inotify event; see
//! `branchline_firmware::provision`). The pieces:
//!
//! - the udev rule ([`UDEV_PATH`]) matches a USB block device carrying a vfat, exfat
//!   or ext2/3/4 filesystem and starts the helper as a transient systemd service
//!   (`systemd-run --no-block`), and again with `remove` when the stick goes. udev
//!   does not mount itself: its `RUN` programs run in a private mount namespace (the
//!   mount would be invisible) and are killed after a few seconds. (A template unit
//!   `...@.service` would be the other way; bundle paths do not allow `@`.)
//! - the helper script ([`USB_MOUNT_SCRIPT_PATH`], `add|remove <name>`) checks the
//!   name, mounts read-write with `nodev,nosuid,noexec` (vfat/exfat owned by the
//!   `branchline` user, so branchd can write its result file), then touches the
//!   marker; `remove` deletes the marker and unmounts (lazily if busy). A plain
//!   script rather than `systemd-mount`: it must touch the marker after the mount
//!   and pick owner options per filesystem.
//! - tmpfiles ([`TMPFILES_PATH`]) creates `/run/branchline/usb` at boot, since
//!   branchd (unprivileged, `ProtectSystem=strict`) cannot create it in `/run`.
//!
//! Limits: an ext2/3/4 stick keeps its own ownership (branchd can write the result
//! file only where the stick's root allows it; otherwise the result is only logged);
//! other filesystems (NTFS) are not mounted.

use branchline_board::profile::{BoardProfile, UartPath};

use crate::bundle::BundleFile;
use crate::error::{Error, Result};

/// Path of the generated systemd unit inside the bundle.
pub const UNIT_PATH: &str = "etc/systemd/system/branchd.service";
/// Path of the boot-step unit inside bundles for boards with directory slots.
pub const BOOT_UNIT_PATH: &str = "etc/systemd/system/branchline-slot-boot.service";
/// Path of the generated default config inside the bundle.
pub const CONFIG_PATH: &str = "etc/branchline/branchd.toml";
/// Path of the generated udev rule inside the bundle.
pub const UDEV_PATH: &str = "etc/udev/rules.d/90-branchline-usb.rules";
/// Path of the generated logrotate config inside the bundle.
pub const LOGROTATE_PATH: &str = "etc/logrotate.d/branchline";
/// Path of the generated sysusers entry inside the bundle.
pub const SYSUSERS_PATH: &str = "usr/lib/sysusers.d/branchline.conf";
/// Path of the generated journald limits inside the bundle.
pub const JOURNALD_PATH: &str = "etc/systemd/journald.conf.d/branchline.conf";
/// Path of the generated kernel settings inside the bundle (systemd-sysctl).
pub const SYSCTL_PATH: &str = "usr/lib/sysctl.d/60-branchline.conf";
/// Path of the USB stick mount helper inside the bundle (mode 0755).
pub const USB_MOUNT_SCRIPT_PATH: &str = "usr/libexec/branchline/usb-mount";
/// Path of the tmpfiles entry creating the stick mount base inside the bundle.
pub const TMPFILES_PATH: &str = "usr/lib/tmpfiles.d/branchline.conf";
/// Where sticks are mounted (`<base>/<kernel name>`): branchd's `[provisioning]
/// watch`.
pub const USB_MOUNT_BASE: &str = "/run/branchline/usb";
/// Mount options of a stick (plus owner options on vfat/exfat).
pub const USB_MOUNT_OPTIONS: &str = "rw,nodev,nosuid,noexec,noatime";

/// The overlay files for built-in board profile `board`.
pub fn generate(board: &str) -> Result<Vec<BundleFile>> {
    let profile = BoardProfile::builtin(board).map_err(|e| Error::Manifest {
        field: "board",
        reason: e.to_string(),
    })?;
    let file = |path: &str, text: String| BundleFile {
        path: path.to_owned(),
        contents: text.into_bytes(),
        mode: 0o644,
    };
    Ok(vec![
        file(UNIT_PATH, unit(board, &profile)),
        file(CONFIG_PATH, config(board, &profile)),
        file(UDEV_PATH, UDEV.to_owned()),
        file(LOGROTATE_PATH, LOGROTATE.to_owned()),
        file(SYSUSERS_PATH, SYSUSERS.to_owned()),
        file(JOURNALD_PATH, JOURNALD.to_owned()),
        file(SYSCTL_PATH, SYSCTL.to_owned()),
        BundleFile {
            path: USB_MOUNT_SCRIPT_PATH.to_owned(),
            contents: usb_mount_script().into_bytes(),
            mode: 0o755,
        },
        file(TMPFILES_PATH, TMPFILES.to_owned()),
    ]
    .into_iter()
    .chain(dir_slots(&profile).then(|| file(BOOT_UNIT_PATH, boot_unit(board))))
    .collect())
}

/// Whether boards of profile `p` keep their slots in a directory (the boot step is
/// ours) rather than in U-Boot's environment. The generated config says the same
/// (`[update] backend`).
fn dir_slots(p: &BoardProfile) -> bool {
    p.simulated
}

/// The binaries (`usr/bin/NAME`) a bundle for built-in board `board` must carry:
/// `branchd`, and `branch-image` where the boot step runs it (directory slots).
pub fn required_binaries(board: &str) -> Result<Vec<&'static str>> {
    let profile = BoardProfile::builtin(board).map_err(|e| Error::Manifest {
        field: "board",
        reason: e.to_string(),
    })?;
    let mut bins = vec!["branchd"];
    if dir_slots(&profile) {
        bins.push("branch-image");
    }
    Ok(bins)
}

fn boot_unit(board: &str) -> String {
    format!(
        "# Generated by branch-image for board {board}, whose A/B slots are a directory:
# plays the bootloader's part once per boot (chooses the slot, spends a trial boot's
# one try) before branchd starts. Not rerun when branchd restarts.
[Unit]
Description=Branchline A/B slot boot step (directory slots)
DefaultDependencies=no
After=local-fs.target
Before=branchd.service
ConditionPathIsDirectory={SLOTS_DIR}

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/branch-image boot --slots {SLOTS_DIR}

[Install]
WantedBy=multi-user.target
"
    )
}

fn unit(board: &str, p: &BoardProfile) -> String {
    let mut devices = String::new();
    match &p.uart.path {
        UartPath::Device(dev) => devices.push_str(&format!("DeviceAllow={} rw\n", dev.display())),
        // The built-in simulator talks over a pty.
        UartPath::Simulator => {
            devices.push_str("DeviceAllow=/dev/ptmx rw\nDeviceAllow=char-pts rw\n")
        }
    }
    if let Some(gpio) = &p.gpio {
        devices.push_str(&format!("DeviceAllow={} rw\n", gpio.chip.display()));
    }
    // Hardware boards keep the slot state in the U-Boot environment: fw_setenv writes
    // the env device (MTD here; an eMMC env needs its block device in a drop-in) and
    // takes its lock under /run/lock. The device node must be writable by the group.
    let uboot = if dir_slots(p) {
        String::new()
    } else {
        devices.push_str("DeviceAllow=char-mtd rw\n");
        "ReadWritePaths=-/run/lock\n".to_owned()
    };
    // Directory slots: the boot step runs first (once per boot).
    let boot_step = if dir_slots(p) {
        "Wants=branchline-slot-boot.service\nAfter=branchline-slot-boot.service\n"
    } else {
        ""
    };
    format!(
        "# Generated by branch-image for board {board} ({model}). Replaced by every update:
# override with a drop-in in /etc/systemd/system/branchd.service.d/.
[Unit]
Description=Branchline telephone gateway daemon
After=network-online.target
Wants=network-online.target
{boot_step}
[Service]
# branchd speaks sd_notify: READY=1 once its main loop runs, WATCHDOG=1 from that loop
# every WatchdogSec/2. A loop that stops turning is killed (SIGABRT) and restarted.
Type=notify
NotifyAccess=main
WatchdogSec=30s
# First boot hashes the installer password and opens a new store: allow for a slow box.
TimeoutStartSec=120s
ExecStart=/usr/bin/branchd --config /etc/branchline/branchd.toml
Restart=on-failure
RestartSec=2s
# Exit status 3: an update's trial boot failed its health check. Do not restart into
# the same slot: the unit fails, and the reboot boots the previous slot (the trial's
# one try is spent). Five crashes within five minutes also fail the unit and reboot.
RestartPreventExitStatus=3
# Exit status 4: an update from HQ is installed in the inactive slot. The unit fails
# the same way and the reboot boots the new slot once (its trial boot).
RestartPreventExitStatus=4
# Exit status 6: a reboot asked for on the web page's system page or the API
# (POST /api/v1/system/reboot). The unit fails the same way and the box reboots.
RestartPreventExitStatus=6
FailureAction=reboot
StartLimitIntervalSec=5min
StartLimitBurst=5

User=branchline
Group=branchline
# UART and gpiochip nodes must be group-accessible (dialout) to this user.
SupplementaryGroups=dialout
# SIP on 5060 and the web UI may use ports below 1024 (CAP_NET_BIND_SERVICE); the
# tools page's packet capture reads an AF_PACKET socket, and its ping and traceroute
# send ICMP / raw probes (CAP_NET_RAW). Those are the only capabilities.
AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_RAW
CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_NET_RAW
NoNewPrivileges=yes

ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
StateDirectory=branchline
StateDirectoryMode=0750
LogsDirectory=branchline
ReadWritePaths=/var/lib/branchline
# The A/B slots ([update] slots): state.json and the slot payloads (on U-Boot boards
# the slot partitions are mounted at slots/a and slots/b); the updater writes the
# inactive one and the health check commits the booted one.
ReadWritePaths=-{SLOTS_DIR}
{uboot}# Provisioning sticks (see the udev rule); '-': fine when nothing is mounted.
ReadWritePaths=-/run/branchline/usb
UMask=0027

DevicePolicy=closed
{devices}RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_PACKET
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
",
        model = p.model,
    )
}

/// Where the generated config keeps the A/B slots (`[update] slots`), writable in the
/// unit.
pub const SLOTS_DIR: &str = "/var/lib/branchline-slots";

fn config(board: &str, p: &BoardProfile) -> String {
    format!(
        "# Default branchd configuration for board {board} ({model}), shipped in the update
# bundle. Site settings (extensions, lines) are added by provisioning.
[paths]
data_dir = \"/var/lib/branchline\"

[board]
profile = \"{board}\"

[log]
level = \"info\"
format = \"json\"

[telephony]
country = \"{country}\"

# The technicians' web page on the LAN (README, \"Web diagnostics\"): plain HTTP until the
# box is enrolled, then HTTPS with its device certificate on the same port (plain HTTP
# is redirected), so http://<box address>/ always leads to the page.
[web]
listen = \"0.0.0.0:80\"

# A/B slots: the post-boot health check commits an update's trial boot here.
[update]
{update}",
        model = p.model,
        country = p.country,
        update = if dir_slots(p) {
            format!("backend = \"dir\"\nslots = \"{SLOTS_DIR}\"\n")
        } else {
            format!("backend = \"uboot\"\nslots = \"{SLOTS_DIR}\"\n")
        },
    )
}

const UDEV: &str = r#"# Branchline provisioning: a USB stick's filesystem is mounted read-write under
# /run/branchline/usb/<kernel name> by /usr/libexec/branchline/usb-mount, run as a transient
# systemd service (systemd-run --no-block): udev itself must not mount, its RUN programs
# live in a private mount namespace and are killed after a few seconds.
ACTION=="add", SUBSYSTEM=="block", ENV{ID_BUS}=="usb", ENV{ID_FS_USAGE}=="filesystem", ENV{ID_FS_TYPE}=="vfat|exfat|ext2|ext3|ext4", RUN{program}+="/usr/bin/systemd-run --no-block --collect --unit=branchline-usb-mount-%k /usr/libexec/branchline/usb-mount add %k"
ACTION=="remove", SUBSYSTEM=="block", ENV{ID_BUS}=="usb", RUN{program}+="/usr/bin/systemd-run --no-block --collect /usr/libexec/branchline/usb-mount remove %k"
"#;

fn usb_mount_script() -> String {
    format!(
        r#"#!/bin/sh
# usb-mount add|remove NAME: mounts /dev/NAME (a USB stick's filesystem) read-write at
# {base}/NAME for branchd's provisioning watcher, or unmounts it.
# Run as a transient service (systemd-run) from the udev rule. The contract with branchd
# (branchline_firmware::provision): mount first, then touch {base}/NAME.mounted,
# which wakes branchd's inotify watch on {base}.
set -eu
BASE={base}
OWNER=branchline
OPTIONS={options}

usage() {{
    echo "usage: usb-mount add|remove NAME (NAME: kernel block device name, e.g. sda1)" >&2
    exit 2
}}

[ "$#" -eq 2 ] || usage
action=$1
name=$2
case "$name" in
    ''|*[!a-z0-9]*) echo "usb-mount: bad device name '$name'" >&2; usage ;;
esac
dev=/dev/$name
mnt=$BASE/$name

case "$action" in
add)
    # Only a block device is probed, and only that one: -p reads its superblock
    # directly (no blkid cache, no scan of the other devices).
    if [ ! -b "$dev" ]; then
        echo "usb-mount: $dev is not a block device" >&2
        exit 1
    fi
    fstype=$(blkid -p -o value -s TYPE "$dev" || true)
    case "$fstype" in
        vfat|exfat)
            # branchd writes its result file back to the stick.
            extra=",uid=$(id -u "$OWNER"),gid=$(id -g "$OWNER"),fmask=0137,dmask=0027" ;;
        ext2|ext3|ext4)
            extra="" ;;
        *)
            echo "usb-mount: $dev: filesystem '$fstype' is not mounted (vfat, exfat, ext2/3/4 only)" >&2
            exit 1 ;;
    esac
    install -d -m 0755 "$BASE"
    install -d -m 0755 "$mnt"
    if ! mount -t "$fstype" -o "$OPTIONS$extra" "$dev" "$mnt"; then
        rmdir "$mnt" 2>/dev/null || true
        exit 1
    fi
    touch "$BASE/$name.mounted"
    ;;
remove)
    rm -f "$BASE/$name.mounted"
    if mountpoint -q "$mnt"; then
        umount "$mnt" || umount -l "$mnt"
    fi
    rmdir "$mnt" 2>/dev/null || true
    ;;
*)
    echo "usb-mount: unknown action '$action'" >&2
    usage ;;
esac
"#,
        base = USB_MOUNT_BASE,
        options = USB_MOUNT_OPTIONS,
    )
}

const TMPFILES: &str =
    "# The base directory branchd watches for provisioning sticks (see usb-mount).
d /run/branchline 0755 root root -
d /run/branchline/usb 0755 root root -
";

const LOGROTATE: &str =
    "# branchd logs to journald (bounded in journald.conf.d/branchline.conf); this keeps
# any text logs under /var/log/branchline bounded too.
/var/log/branchline/*.log {
    weekly
    rotate 4
    maxsize 1M
    compress
    missingok
    notifempty
    copytruncate
    su branchline branchline
}
";

const SYSUSERS: &str = "# The unprivileged user branchd runs as.
u branchline - \"Branchline gateway daemon\" /var/lib/branchline
m branchline dialout
";

/// branchd (unprivileged) asks for a 1 MiB receive buffer on its SIP UDP listener
/// (`branchline_sip::transport::DEFAULT_UDP_RECEIVE_BUFFER`); the kernel grants at most
/// `net.core.rmem_max`, 208 KiB by default.
const SYSCTL: &str = "# branchd's SIP listener asks for a 1 MiB UDP receive buffer: the default cap
# (208 KiB) overflows within some 25 ms of a stall at 1,000 calls/s, and every
# datagram the kernel drops costs a retransmission 500 ms later.
net.core.rmem_max = 4194304
";

const JOURNALD: &str = "# Flash is small: bound the journal.
[Journal]
SystemMaxUse=32M
RuntimeMaxUse=16M
";
