"""The notification rules (core.notices) and the desktop settings, pure: no bus, no sockets."""

from __future__ import annotations

import pytest
import yaml

from ollama_proxy.config.load import validate
from ollama_proxy.core.modes import EfficiencyMode as M
from ollama_proxy.core.notices import NoticeKind, NoticeLimiter, Urgency, auto_switch_notice, thermal_notice
from ollama_proxy.errors import ConfigError


def test_only_auto_switching_the_mode_in_force_is_news() -> None:
    notice = auto_switch_notice(M.AUTO, M.BALANCED, M.QUIET, "auto: cpu package 90C >= hot 80C")
    assert notice is not None and notice.kind is NoticeKind.MODE
    assert (notice.summary, notice.body) == ("AI efficiency: quiet",
                                             "Auto mode switched from balanced to quiet: cpu package 90C >= hot 80C")
    assert auto_switch_notice(M.PERFORMANCE, M.PERFORMANCE, M.PERFORMANCE, "set to performance") is None
    assert auto_switch_notice(M.AUTO, M.QUIET, M.QUIET, "auto: still hot") is None


@pytest.mark.parametrize(("before", "after", "summary", "urgency"), [
    ("cool", "hot", "The machine is hot", Urgency.NORMAL),
    ("warm", "critical", "The machine is critical", Urgency.CRITICAL),
    ("hot", "critical", "The machine is critical", Urgency.CRITICAL),
    ("critical", "warm", "The machine has cooled down", Urgency.LOW),
    ("cool", "warm", None, None), ("warm", "cool", None, None), ("critical", "hot", None, None),
    (None, "hot", None, None), ("unknown", "hot", None, None),
])
def test_thermal_notices_for_heat_and_for_cooling_down(before: str | None, after: str, summary: str | None,
                                                       urgency: Urgency | None) -> None:
    notice = thermal_notice(before, after, "cpu package 90C")
    assert (notice.summary if notice else None, notice.urgency if notice else None) == (summary, urgency)


def test_one_notice_per_kind_per_interval() -> None:
    limiter = NoticeLimiter(interval_s=60)
    assert limiter.allow(NoticeKind.MODE, 0.0)
    assert not limiter.allow(NoticeKind.MODE, 59.9)
    assert limiter.allow(NoticeKind.THERMAL, 30.0)  # each kind has its own allowance
    assert limiter.allow(NoticeKind.MODE, 60.0)
    assert not limiter.allow(NoticeKind.THERMAL, 60.0)


@pytest.mark.parametrize(("text", "dbus"), [("dbus: off", "off"), ("dbus: on", "on"), ("dbus: auto", "auto"),
                                            ("notifications: false", "auto")])
def test_desktop_settings_read_as_yaml_writes_them(text: str, dbus: str) -> None:
    config = validate({"desktop": yaml.safe_load(text)})
    assert config.desktop.dbus == dbus
    assert config.desktop.notifications is ("notifications" not in text)


def test_an_unknown_dbus_setting_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"desktop\.dbus"):
        validate({"desktop": {"dbus": "sometimes"}})
