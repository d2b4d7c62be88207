"""edge_ocr.config: real TOML through load_config; key-path errors, defaults, secrets, reload diff."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import MISSING, replace
from pathlib import Path

import pytest

from edge_ocr.config import (
    SECTIONS,
    CameraSourceConfig,
    EngineConfig,
    FleetConfig,
    FolderSourceConfig,
    GuardConfig,
    HttpConfig,
    MqttConfig,
    PipelineConfig,
    Secret,
    config_diff,
    config_to_json,
    default_state_dir,
    find_config,
    is_live,
    keys,
    load_config,
    redact_url,
    reference_markdown,
    with_live,
)
from edge_ocr.engine.types import EngineOptions, Region
from edge_ocr.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_config(path, environ=environ or {})


@pytest.mark.parametrize(
    "text, message",
    [
        ("[mqtt]\nport = 70000\n", "mqtt.port: expected 1..65535, got 70000"),
        ("[mqtt]\nprot = 1\n", "mqtt.prot: unknown key (did you mean 'port'?)"),
        ("[mqtt]\nport = \"1883\"\n", "mqtt.port: expected an integer, got str '1883'"),
        ("[engine]\nprecision = \"fp16\"\n", "engine.precision: expected one of auto | fp32 | int8, got 'fp16'"),
        ("[engine]\nthreads = 0\n", 'engine.threads: expected "auto" or an integer from 1 to 256, got 0'),
        ("[engine]\nthreads = 100000\n", 'engine.threads: expected "auto" or an integer from 1 to 256, got 100000'),
        ("[engine]\nlow_confidence = nan\n", "engine.low_confidence: expected a finite number, got nan"),
        ("[[sources]]\nname = \"a\"\npath = \"x\"\nwatch = \"poll\"\npoll_interval = nan\n",
         "sources[0].poll_interval: expected a finite number, got nan"),
        ("[[sources]]\nname = \"a\"\ntype = \"camera\"\ninterval = inf\n",
         "sources[0].interval: expected a finite number, got inf"),
        ("[engine]\nrecheck_below = 1.5\n", "engine.recheck_below: expected 0.0..1.0, got 1.5"),
        ("[engine]\nfast_reader = \"no\"\n", "engine.fast_reader: expected true or false"),
        ("[nope]\n", "nope: unknown key"),
        ("[[sources]]\nname = \"a\"\npath = \"x\"\nstability_delay = -1\n",
         "sources[0].stability_delay: expected 0.0..3600.0, got -1"),
        ("[[sources]]\nname = \"a\"\n", "sources[0].path: required key missing"),
        ("[[sources]]\nname = \"a\"\npath = \"x\"\n[[sources]]\nname = \"a\"\npath = \"y\"\n",
         "sources[1].name: duplicate source name 'a'"),
        ("[mqtt]\npassword = \"hunter2\"\n", "mqtt.password: secrets are not read from the config"),
        ("[[sources]]\nname = \"cmd\"\npath = \"x\"\n", "sources[0].name: 'cmd' is reserved for the MQTT commands"),
        ("[guard]\nrss_soft_mb = 650\n", "guard.rss_hard_mb: expected more than rss_soft_mb (650), got 600"),
        # ~user of a user this machine lacks (no "pi" account on Raspberry Pi OS since Bookworm)
        ("[[sources]]\nname = \"a\"\npath = \"~no-such-user-here/inbox\"\n",
         "sources[0].path: cannot expand '~no-such-user-here/inbox': no such user's home here"),
        ("[[sources]]\nname = \"c\"\ntype = \"camera\"\ndevice = \"~no-such-user-here/a.avi\"\n",
         "sources[0].device: cannot expand"),
        ("[mqtt]\npassword_file = \"~no-such-user-here/pw\"\n", "mqtt.password_file: cannot expand"),
        ("[mqtt]\nca_file = \"~no-such-user-here/ca.pem\"\n", "mqtt.ca_file: cannot expand"),
        ("[http]\ntoken_file = \"~no-such-user-here/token\"\n", "http.token_file: cannot expand"),
        ("[mqtt]\ntopic_prefix = \"home/+\"\n", "mqtt.topic_prefix: expected a topic without wildcards"),
        # paho refused the discovery topics on connect, in its own thread, which then ended for good
        ("[mqtt]\ndiscovery_prefix = \"homeassistant/+\"\n", "mqtt.discovery_prefix: expected a topic without wildcards"),
        # paho raised ValueError("Invalid host.") at connect: a traceback from run, check, submit and fleet status
        ("[mqtt]\nhost = \"\"\n", "mqtt.host: expected a host name or address (no scheme, no user, no path), got ''"),
        ("[mqtt]\nhost = \"mqtt://broker.lan\"\n", "mqtt.host: expected a host name or address (no scheme"),
        # ... and the password of a broker written as Node-RED spells it is not shown back
        ("[mqtt]\nhost = \"mqtt://edge:hunter2@127.0.0.1\"\n", "got 'mqtt://***@127.0.0.1'"),
        ("[mqtt]\nhost = \"edge:hunter2@127.0.0.1\"\n", "got '***@127.0.0.1'"),
        # values the resolver refused in paho's thread, which then ended for good
        ("[mqtt]\nhost = \"broker..lan\"\n", "mqtt.host: expected a host name (labels of 1 to 63 characters)"),
        ("[mqtt]\nhost = \"[::1]\"\n", "mqtt.host: expected an IPv6 address without brackets"),
        ("[mqtt]\nhost = \".\"\n", "mqtt.host: expected a host name (labels of 1 to 63 characters)"),
        ("[mqtt]\nhost = \"broker\\u0007\"\n", "(a control character)"),
        # a password with white space, in the values these errors quote
        ("[mqtt]\nhost = \"mqtt://edge:hunter 2@127.0.0.1\"\n", "got 'mqtt://***@127.0.0.1'"),
        ("[[sources]]\nname = \"g\"\ntype = \"camera\"\nbackend = \"picamera2\"\n"
         "device = \"rtsp://admin:hunter 2@10.0.0.9/s\"\n", "got 'rtsp://***@10.0.0.9/s'"),
        ("[[sources]]\nname = \"g\"\ntype = \"camera\"\ndevice = [\"rtsp://admin:hunter 2@10.0.0.9/s\"]\n",
         "'rtsp://***@10.0.0.9/s'"),
        ("[mqtt]\nusername = \"u\"\npassword_file = \"pw\\u0000\"\n", "mqtt.password_file: contains a NUL character"),
        ("[[sources]]\nname = \"a\"\npath = \"in\\u0000x\"\n", "sources[0].path: contains a NUL character"),
        ("[[sources]]\nname = \"g\"\ntype = \"camera\"\ndevice = [\"rtsp://admin:hunter2@10.0.0.9/s\"]\n",
         "rtsp://***@10.0.0.9/s"),
        ("[mqtt]\nhost = \"broker.lan:1883\"\n", "mqtt.host: expected a host name or address without a port"),
        # a camera URL in a message about it is redacted like everywhere else
        ("[[sources]]\nname = \"g\"\ntype = \"camera\"\nbackend = \"picamera2\"\n"
         "device = \"rtsp://admin:hunter2@10.0.0.9/s\"\n", "got 'rtsp://***@10.0.0.9/s'"),
    ],
)
def test_bad_values_name_the_key_path_and_reason(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert message in err.value.message
    assert "hunter" not in err.value.message


def test_a_region_named_in_home_assistant_like_another_source_is_refused_unless_discovery_is_off(tmp_path):
    # Home Assistant names a region's sensor <source>_<region>: "gas" + "meter" is source "gas_meter".
    sources = ('[[sources]]\nname = "gas"\ntype = "camera"\nrois = [{ name = "meter", box = [0, 0, 10, 10] }]\n'
               '[[sources]]\nname = "gas_meter"\npath = "x"\n')
    with pytest.raises(ConfigError) as err:
        load(tmp_path, sources)
    assert err.value.problems == ("sources[0].rois[0].name: 'meter' of source 'gas' is named 'gas_meter' in Home "
                                  "Assistant, as source 'gas_meter'; rename one",)
    assert len(load(tmp_path, sources + "[mqtt]\ndiscovery = false\n").sources) == 2


def test_two_regions_named_alike_in_home_assistant_are_refused(tmp_path):
    # region "gas_total" of source "meter" and region "total" of source "meter_gas": both "meter_gas_total"
    sources = ('[[sources]]\nname = "meter"\ntype = "camera"\nrois = [{ name = "gas_total", box = [0, 0, 10, 10] }]\n'
               '[[sources]]\nname = "meter_gas"\ntype = "camera"\nrois = [{ name = "total", box = [0, 0, 10, 10] }]\n')
    with pytest.raises(ConfigError) as err:
        load(tmp_path, sources)
    assert err.value.problems == ("sources[1].rois[0].name: 'total' of source 'meter_gas' is named 'meter_gas_total' "
                                  "in Home Assistant, as region 'gas_total' of source 'meter'; rename one",)


def test_built_in_defaults_and_state_dirs(tmp_path):
    config = load_config(None, environ={"STATE_DIRECTORY": str(tmp_path / "state")})
    (source,) = config.sources
    assert isinstance(source, FolderSourceConfig) and source.name == "inbox"
    assert source.path == tmp_path / "state" / "inbox" and source.done_dir == tmp_path / "state" / "done"
    assert config.mqtt.enabled and config.mqtt.host == "localhost" and config.mqtt.port == 1883
    assert config.mqtt.spool_dir == tmp_path / "state" / "spool"
    assert config.mqtt.client_id.startswith("edge-ocr-") and "<hostname>" not in config.mqtt.topic_prefix
    assert default_state_dir({"HOME": "/home/pi"}, uid=1000) == Path("/home/pi/.local/state/edge-ocr")
    assert default_state_dir({"XDG_STATE_HOME": "/x"}, uid=1000) == Path("/x/edge-ocr")
    assert default_state_dir({}, uid=0) == Path("/var/lib/edge-ocr")


def test_engine_keys_reach_the_engine_options(tmp_path):
    options = load(tmp_path, "[engine]\nfast_reader = false\nrecheck_below = 0.9\ndraft_min_width = 0\n").engine.to_options()
    assert options.use_rec_fast is False and options.recheck_below == 0.9 and options.draft_min_width == 0
    assert load(tmp_path, "").engine.to_options().use_rec_fast is True


def test_search_order(tmp_path):
    assert find_config("a.toml", {"EDGE_OCR_CONFIG": "b.toml"}) == Path("a.toml")
    assert find_config(None, {"EDGE_OCR_CONFIG": "b.toml"}) == Path("b.toml")


def _example_tables() -> dict[type, dict]:
    """The example file's tables, with its commented-out camera source (TOML, not prose) uncommented."""
    text = (REPO / "config" / "edge-ocr.toml").read_text()
    data = tomllib.loads(text)
    block = text[text.index("# [[sources]]\n# name = \"meter\""):text.index("[mqtt]")]
    setting = re.compile(r"# (\[\[sources\]\]|[a-z_]+ = |\s+\{|\])")
    camera = tomllib.loads("\n".join(line[2:] for line in block.splitlines() if setting.match(line)))["sources"][0]
    return {EngineConfig: data["engine"], PipelineConfig: data["pipeline"], FolderSourceConfig: data["sources"][0],
            CameraSourceConfig: camera, Region: camera["rois"][0], MqttConfig: data["mqtt"], HttpConfig: data["http"],
            GuardConfig: data["guard"], FleetConfig: data["fleet"]}


def test_the_example_file_shows_every_key_at_its_declared_default():
    load_config(REPO / "config" / "edge-ocr.toml", environ={})  # it loads
    tables = _example_tables()
    for _section, cls in SECTIONS:
        for f in keys(cls):
            assert f.name in tables[cls], "%s.%s missing from config/edge-ocr.toml" % (cls.__name__, f.name)
            static = f.default is not MISSING and f.metadata.get("shown") is None
            if static and cls is not Region and f.name != "rois":  # the example shows a filled-in region
                declared = list(f.default) if isinstance(f.default, tuple) else f.default
                assert tables[cls][f.name] == declared, "%s.%s" % (cls.__name__, f.name)


def test_the_readme_config_reference_is_generated_from_the_declarations():
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("<!-- config-reference: begin -->\n") + 33:readme.index("<!-- config-reference: end -->")]
    assert table == reference_markdown(), "regenerate: python -c 'from edge_ocr.config import reference_markdown " \
                                          "as r; print(r())'"


def test_each_key_is_enforced_however_its_table_is_built():
    # the declared bound holds for a hand-built object too, not only for the TOML walker
    with pytest.raises(ConfigError, match=r"queue_size: expected 1..1024, got 0"):
        PipelineConfig(queue_size=0)
    with pytest.raises(ConfigError, match=r"rss_hard_mb: expected more than rss_soft_mb"):
        GuardConfig(rss_soft_mb=650)
    with pytest.raises(ConfigError, match=r"precision: expected one of auto \| fp32 \| int8"):
        EngineConfig(precision="fp16")
    with pytest.raises(ConfigError, match=r"low_confidence: expected a finite number, got nan"):
        EngineConfig(low_confidence=float("nan"))  # as `edge-ocr ocr --low-confidence nan` builds it


def test_engine_defaults_are_the_engines_own():
    # [engine] keys take their defaults from EngineOptions: one declaration, two layers
    assert EngineConfig().to_options() == EngineOptions()
    assert EngineConfig(cls=True, fast_reader=False).to_options() == EngineOptions(use_cls=True, use_rec_fast=False)


def test_live_keys_come_from_the_declarations():
    assert is_live("engine.low_confidence") and is_live("sources.inbox.stability_delay")
    assert not is_live("engine.pack") and not is_live("mqtt.host") and not is_live("sources.cam.rois")


def test_credentials_in_a_camera_url_never_show_in_the_config_view(tmp_path):
    config = load(tmp_path, '[[sources]]\nname = "gate"\ntype = "camera"\ndevice = "rtsp://admin:hunter2@10.0.0.9/s"\n')
    view = json.dumps(config_to_json(config))
    assert "hunter2" not in view and "rtsp://***@10.0.0.9/s" in view
    assert redact_url("http://10.0.0.9/cgi-bin/CGIProxy.fcgi?cmd=snapPicture2&usr=admin&pwd=hunter2") == \
        "http://10.0.0.9/cgi-bin/CGIProxy.fcgi?cmd=snapPicture2&usr=***&pwd=***"
    assert redact_url("http://cam/snapshot.cgi?loginuse=admin&loginpas=hunter2&res=1") == \
        "http://cam/snapshot.cgi?loginuse=***&loginpas=***&res=1"
    assert redact_url("rtsp://cam/live?Token=hunter2") == "rtsp://cam/live?Token=***"
    assert redact_url("rtsp://cam/live?channel=1&subtype=0") == "rtsp://cam/live?channel=1&subtype=0"
    # FFmpeg takes the user info up to the last @ before the host, so a password may hold one
    assert redact_url("cannot open rtsp://admin:p@ssW0rd@10.0.0.9:554/s now") == "cannot open rtsp://***@10.0.0.9:554/s now"
    assert redact_url("http://cam/a?pwd=hunter2 then more") == "http://cam/a?pwd=*** then more"
    # ... or a # or a ? (the first version of that rule stopped there and showed the rest)
    assert redact_url("rtsp://admin:Sunny#2024@10.0.0.9/s") == "rtsp://***@10.0.0.9/s"
    assert redact_url("rtsp://admin:what?ever@10.0.0.9/s") == "rtsp://***@10.0.0.9/s"
    # a share and an address further on in a line are no credentials
    assert redact_url("//nas/share failed; mail admin@example.com") == "//nas/share failed; mail admin@example.com"
    # a config value is one URL: white space in its password is hidden too
    assert redact_url("rtsp://admin:my pass@10.0.0.9/s", whole=True) == "rtsp://***@10.0.0.9/s"
    assert redact_url("http://cam/a?pwd=pa ss&x=1", whole=True) == "http://cam/a?pwd=***&x=1"
    config = load(tmp_path, '[[sources]]\nname = "g"\ntype = "camera"\ndevice = "rtsp://admin:Sunny#2024@10.0.0.9/s"\n')
    assert "Sunny" not in json.dumps(config_to_json(config))


def test_an_ipv6_broker_address_is_a_host(tmp_path):
    assert load(tmp_path, '[mqtt]\nhost = "fd00::2"\n').mqtt.host == "fd00::2"


@pytest.mark.parametrize("sources, message", [
    # done_dir spelled another way: the daemon read its own results again and again
    ('[[sources]]\nname = "a"\npath = "in"\ndone_dir = "x/../in"\n', "sources[0].done_dir: must differ from path"),
    # two sources on one inbox split its files at random
    ('[[sources]]\nname = "a"\npath = "in"\n[[sources]]\nname = "b"\npath = "./in"\n',
     "sources[1].path: the same folder as sources[0].path"),
    # a source watching another's done folder took its results (and .json) as input
    ('[[sources]]\nname = "a"\npath = "in"\ndone_dir = "out"\n[[sources]]\nname = "b"\npath = "out"\n',
     "sources[1].path: the same folder as sources[0].done_dir"),
    ('[[sources]]\nname = "b"\npath = "out"\n[[sources]]\nname = "a"\npath = "in"\nfailed_dir = "out"\n',
     "sources[0].path: the same folder as sources[1].failed_dir"),
])
def test_one_folder_is_never_two_sources_inboxes_or_an_inbox_and_results(tmp_path, sources, message):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, sources)
    assert message in err.value.problems


def test_sources_may_share_a_done_folder(tmp_path):
    config = load(tmp_path, '[[sources]]\nname = "a"\npath = "in"\ndone_dir = "out"\n'
                            '[[sources]]\nname = "b"\npath = "in2"\ndone_dir = "out"\n')
    assert [s.done_dir for s in config.sources] == [tmp_path / "out", tmp_path / "out"]


def test_secrets_come_from_files_and_never_show(tmp_path):
    (tmp_path / "pw").write_text("hunter2\n")
    config = load(tmp_path, '[mqtt]\nusername = "u"\npassword_file = "pw"\n')
    assert isinstance(config.mqtt.password, Secret) and config.mqtt.password.reveal() == "hunter2"
    assert "hunter2" not in repr(config) and "hunter2" not in str(config.mqtt.password)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt_password").write_text("from-systemd")
    config = load(tmp_path, '[mqtt]\nusername = "u"\n', {"CREDENTIALS_DIRECTORY": str(creds)})
    assert config.mqtt.password is not None and config.mqtt.password.reveal() == "from-systemd"
    with pytest.raises(ConfigError, match=r"mqtt\.password_file: file not found"):
        load(tmp_path, '[mqtt]\nusername = "u"\npassword_file = "missing"\n')


def test_the_http_token_is_resolved_like_the_mqtt_password(tmp_path):
    (tmp_path / "token").write_text("  s3cret-token \n")  # beside the config file, surrounding blanks dropped
    config = load(tmp_path, '[http]\ntoken_file = "token"\n')
    assert config.http.token is not None and config.http.token.reveal() == "s3cret-token"
    assert "s3cret-token" not in repr(config) and "s3cret-token" not in json.dumps(config_to_json(config))
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "token").write_text("from-credentials-dir")  # a relative name is looked up there first
    config = load(tmp_path, '[http]\ntoken_file = "token"\n', {"CREDENTIALS_DIRECTORY": str(creds)})
    assert config.http.token.reveal() == "from-credentials-dir"
    (creds / "http_token").write_text("from-systemd")  # LoadCredential=http_token, no token_file
    assert load(tmp_path, "", {"CREDENTIALS_DIRECTORY": str(creds)}).http.token.reveal() == "from-systemd"
    assert load(tmp_path, "").http.token is None
    (tmp_path / "blank").write_text("\n")
    with pytest.raises(ConfigError, match=r"http\.token_file: the token file is empty"):
        load(tmp_path, '[http]\ntoken_file = "blank"\n')
    with pytest.raises(ConfigError, match=r"http\.token_file: file not found"):
        load(tmp_path, '[http]\ntoken_file = "missing"\n')


def test_reload_diff_splits_live_keys_from_restart_keys(tmp_path):
    old = load(tmp_path, '[[sources]]\nname = "a"\npath = "in"\n')
    new = replace(old, mqtt=replace(old.mqtt, host="other", publish_every=True),
                  sources=(replace(old.sources[0], stability_delay=5.0),))
    changed = config_diff(old, new)
    assert sorted(changed) == ["mqtt.host", "mqtt.publish_every", "sources.a.stability_delay"]
    assert [k for k in changed if not is_live(k)] == ["mqtt.host"]


def test_with_live_applies_only_live_keys_and_keeps_a_retyped_source(tmp_path):
    old = load(tmp_path, '[[sources]]\nname = "a"\npath = "in"\n[[sources]]\nname = "b"\npath = "in2"\n')
    new = load(tmp_path, '[engine]\nlow_confidence = 0.3\npack = "crnn"\n[[sources]]\nname = "a"\npath = "in"\n'
                         'stability_delay = 7.0\nwatch = "poll"\n[[sources]]\nname = "b"\ntype = "camera"\n')
    running = with_live(old, new)
    assert running.engine.low_confidence == 0.3 and running.engine.pack == old.engine.pack
    assert running.sources[0].stability_delay == 7.0 and running.sources[0].watch == "auto"
    assert running.sources[1] == old.sources[1]  # folder -> camera needs a restart
    assert sorted(config_diff(running, new)) == ["engine.pack", "sources.a.watch", "sources.b"]


def test_documented_camera_example_has_every_key_and_loads(tmp_path):

    text = (REPO / "config" / "edge-ocr.toml").read_text()
    block = text[text.index("# [[sources]]\n# name = \"meter\""):text.index("[mqtt]")]
    setting = re.compile(r"# (\[\[sources\]\]|[a-z_]+ = |\s+\{|\])")  # commented-out TOML, not prose
    toml = "\n".join(line[2:] for line in block.splitlines() if setting.match(line))
    cam = load(tmp_path, toml).sources[0]
    assert isinstance(cam, CameraSourceConfig)
    assert cam == CameraSourceConfig("meter", rois=(Region("reading", (100, 40, 220, 60), "0123456789.",
                                                              r"^\d+\.\d$"),), publish_every=False)
    for name in CameraSourceConfig.__dataclass_fields__:
        assert "\n# %s = " % name in block, name
    for name in Region.__dataclass_fields__:
        assert "%s = " % name in block, name


@pytest.mark.parametrize(
    "extra, message",
    [
        ('size = [640]', "sources[0].size: expected [width, height]"),
        ('autofocus = "on"', "sources[0].autofocus: expected one of continuous | auto | off, got 'on'"),
        ("stable_reads = 0", "sources[0].stable_reads: expected 1..100, got 0"),
        ("publish_every = 1", "sources[0].publish_every: expected true or false, got int 1"),
        ('backend = "picamera2"\ndevice = "/dev/video0"', "sources[0].device: picamera2 expects a camera number"),
        ("rois = [ { name = \"a b\", box = [0, 0, 1, 1] } ]", "sources[0].rois[0].name: expected ASCII letters"),
        ("rois = [ { name = \"a\", box = [0, 0, 1, 1] }, { name = \"a\", box = [0, 0, 1, 1] } ]",
         "sources[0].rois[1].name: duplicate region name 'a'"),
        ("rois = [ { name = \"a\", box = [0, 0, 0, 1] } ]", "sources[0].rois[0].box: expected [x, y, width, height]"),
        ("rois = [ { name = \"a\", box = [0, 0, 1, 1], rotate = 45 } ]",
         "sources[0].rois[0].rotate: expected one of 0, 90, 180, 270, got 45"),
        ("rois = [ { name = \"a\", box = [0, 0, 1, 1], pattern = \"(\" } ]",
         "sources[0].rois[0].pattern: invalid regular expression"),
        ("rois = [ { name = \"a\", box = [0, 0, 1, 1], pattern = \"a{99999999999}\" } ]",  # OverflowError
         "sources[0].rois[0].pattern: invalid regular expression"),
        ("retry_min_delay = 5.0\nretry_max_delay = 1.0", "sources[0].retry_max_delay: expected >= retry_min_delay"),
    ],
)
def test_camera_keys_are_validated(tmp_path, extra, message):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, '[[sources]]\nname = "cam"\ntype = "camera"\n%s\n' % extra)
    assert message in err.value.message


def test_a_camera_video_file_is_relative_to_the_config_as_other_paths_are(tmp_path):
    def device(value: str) -> str:
        return load(tmp_path, '[[sources]]\nname = "c"\ntype = "camera"\ndevice = "%s"\n' % value).sources[0].device

    assert device("meter.avi") == str(tmp_path / "meter.avi")  # under systemd the working directory is /
    assert device("/srv/meter.avi") == "/srv/meter.avi"
    assert device("/dev/video2") == "/dev/video2" and device("1") == "1"
    assert device("rtsp://10.0.0.9/s") == "rtsp://10.0.0.9/s"


def test_camera_defaults_and_picamera2_device(tmp_path):

    cam = load(tmp_path, '[[sources]]\nname = "pi"\ntype = "camera"\nbackend = "picamera2"\nsize = [1920, 1080]\n'
                         "device = 0\n").sources[0]
    assert isinstance(cam, CameraSourceConfig) and cam.device == "0" and cam.size == (1920, 1080)
    assert (cam.interval, cam.loop, cam.change_threshold, cam.stable_reads, cam.publish_every) == (
        1.0, False, 3.0, 2, None)
    assert is_live("sources.pi.change_threshold") and not is_live("sources.pi.rois")


def test_the_pi_zero_2w_profile_loads_and_saves_memory():
    config = load_config(REPO / "config" / "pi-zero-2w.toml", environ={})
    assert config.engine.threads == 1 and config.engine.memory == "low" and config.engine.det_limit_side == 640
    assert config.pipeline.queue_size == 2 and config.guard.rss_hard_mb <= 300
    text = (REPO / "config" / "pi-zero-2w.toml").read_text()
    camera = tomllib.loads("\n".join(line[2:] for line in text.splitlines() if line.startswith("# ") and (
        "=" in line or line.startswith("# [[")) and not line.startswith("# edge") and "Copy" not in line))
    assert camera["sources"][0]["size"] == [1280, 720]


def test_an_empty_config_path_is_an_error_not_the_defaults(tmp_path):
    # `edge-ocr check -c "$UNSET"` checked the built-in defaults and said ok
    with pytest.raises(ConfigError, match="-c: an empty path"):
        find_config("", environ={"EDGE_OCR_CONFIG": str(tmp_path / "c.toml")})


def test_a_config_saved_with_a_byte_order_mark_reads(tmp_path):
    path = tmp_path / "c.toml"
    path.write_bytes(b"\xef\xbb\xbf[mqtt]\nport = 1884\n")  # Notepad's UTF-8
    assert load_config(path, environ={}).mqtt.port == 1884


def test_a_config_in_another_encoding_names_its_line(tmp_path):
    path = tmp_path / "c.toml"
    path.write_bytes(b'[mqtt]\nusername = "edge"\n# caf\xe9\n')  # Latin-1
    with pytest.raises(ConfigError, match=r"not UTF-8 at line 3 \(byte 0xe9\): save the file as UTF-8"):
        load_config(path, environ={})


@pytest.mark.parametrize("line, named", [('host = “localhost”', "U+201C LEFT DOUBLE QUOTATION MARK"),
                                         ("port ＝ 1883", "U+FF1D FULLWIDTH EQUALS SIGN"),
                                         ("port = １８８３", "U+FF11 FULLWIDTH DIGIT ONE")])
def test_a_chinese_input_methods_punctuation_is_named_in_the_toml_error(tmp_path, line, named):
    """Typed with the input method in full-width mode: TOML said only "Invalid value (at line 2, column 8)"."""
    path = tmp_path / "c.toml"
    path.write_text("[mqtt]\n%s\n" % line, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"invalid TOML: .*\(at line 2, column \d+\): .* is %s, not TOML's: type it "
                                          r"in half-width \(ASCII\)" % re.escape(named)):
        load_config(path, environ={})


def test_a_system_config_this_user_cannot_look_at_is_a_config_error(tmp_path, monkeypatch):
    """As a user outside /etc/edge-ocr's group: [Errno 13] and exit 1, not the config's own error."""
    import edge_ocr.config as config_module

    class Hidden(type(tmp_path)):
        def is_file(self):
            raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(config_module, "SYSTEM_CONFIG", Hidden("/etc/edge-ocr/config.toml"))
    with pytest.raises(ConfigError, match="cannot read config: Permission denied"):
        find_config(None, environ={})
