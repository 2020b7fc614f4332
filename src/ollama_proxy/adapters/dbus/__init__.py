"""The desktop front on the D-Bus session bus (docs/dbus.md): `front.py` decides and hears changes,
`session.py` and `interfaces.py` speak dbus-fast and are imported only when the front starts."""
