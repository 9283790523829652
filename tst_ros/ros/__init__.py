"""The only subpackage that imports rclpy: message conversions and the nodes.

Also owns the DDS transport choice of every process that creates this package's nodes:
importing `tst_ros.ros` (every node, the one-process graph runner and the CLI's ROS commands
do, before rclpy.init) selects the participant profile `fastdds_profile.xml`: shared memory on
one host with a 64 MiB segment, UDPv4 with 32 MiB socket buffers for discovery and other hosts,
unless the user chose transports already (`FASTDDS_BUILTIN_TRANSPORTS` or a Fast DDS XML
profile). With the default 512 KiB segment on a busy machine, multi-MB best-effort samples
(clouds, images) are mostly lost between processes. The profile has no TCP: deleting a
participant whose TCP channels (the LARGE_DATA builtin transports) are mid-read can hang in the
Fast DDS these wheels ship (3.2.3; eProsima/Fast-DDS#6066); users who want TCP between hosts
set `FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA`. Participants with default transports still
discover and talk to these ones. Child processes inherit the choice through the environment.
"""
import os
from pathlib import Path

TRANSPORT_VARIABLE = "FASTDDS_BUILTIN_TRANSPORTS"
PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"
PROFILE = Path(__file__).with_name("fastdds_profile.xml")
USER_TRANSPORT_VARIABLES = (TRANSPORT_VARIABLE, "FASTRTPS_DEFAULT_PROFILES_FILE", PROFILE_VARIABLE)


def transport_environment(environ=None) -> dict[str, str]:
    """The variables to add to `environ` (default: this process's) so that Fast DDS uses the
    project's profile (large shared-memory segment, no TCP); empty when the user configured
    transports (or a profile) already."""
    environ = os.environ if environ is None else environ
    if any(environ.get(name) for name in USER_TRANSPORT_VARIABLES):
        return {}
    return {PROFILE_VARIABLE: str(PROFILE)}


def configure_transport() -> dict[str, str]:
    """Set the transport variables in this process (and so in its children); returns what was set.
    Must run before the first rclpy context creates a DDS participant (it reads them then)."""
    added = transport_environment()
    os.environ.update(added)
    return added


# What this import added (launch files pass the same to the processes they start).
ADDED_ENVIRONMENT = configure_transport()
