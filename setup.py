from setuptools import find_packages, setup

setup(
    name="relaynet",
    version="0.1.0",
    description="A relay network for real-time messaging: IRC, MQTT, XMPP and SIP over one spanning tree",
    python_requires=">=3.11",
    packages=find_packages(include=["relay", "relay.*", "bridges", "bridges.*", "topology", "topology.*",
                                    "netsplit", "netsplit.*", "tools", "tools.*"]),
    package_data={"relay": ["default.yaml"]},
    install_requires=[
        "gevent>=24.2",
        "click>=8.1",
        "PyYAML>=6.0",
        "pydantic>=2.6",
        "scramp>=1.4",
        "psutil>=5.9",
        "prompt_toolkit>=3.0",
        "cryptography>=42",
        "h11>=0.14",
        "wsproto>=1.2",
        "lxml>=5",
        "precis-i18n>=1.1",
        "psycopg[binary]>=3.1",
    ],
    extras_require={
        "base": [],
        "test": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "pytest-xdist>=3.5",
            "import-linter>=2.0",
            "irc>=20.0",
            "paho-mqtt>=2.0",
            "hypothesis>=6.100",
            "websocket-client>=1.7",
            "pyte>=0.8",
            "slixmpp>=1.8",
            "aiohttp>=3.9",       # slixmpp's xep_0363 (HTTP upload) PUTs with it
        ],
        "bench": ["py-spy>=0.3"],
    },
    entry_points={"console_scripts": ["relayctl = tools.relayctl:main"]},
)
