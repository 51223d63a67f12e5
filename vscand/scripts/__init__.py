"""Version scripts: our equivalent of Nmap's NSE ``version`` category.

See ``api.py`` for the interface, ``runner.py`` for when scripts run,
``exchange.py`` for their connections and ``registry.py`` for the built-ins.
"""
