"""Prints the exact CMDB requests the fortinet.fortios collection sends for the tasks of the
IOC playbook: the collection's own module code (filter, flatten, underscore_to_hyphen,
FortiOSHandler.set) with a recording connection instead of a FortiGate.

The bodies in sim-fortigate/src/api/cmdb_tests.rs were captured with it (collection 2.4.2):

    python3 -m venv /tmp/ans && /tmp/ans/bin/pip install ansible
    /tmp/ans/bin/python tests/py/capture_ansible_bodies.py          # 6.4 tasks
    V72=1 /tmp/ans/bin/python tests/py/capture_ansible_bodies.py    # 7.x shapes

Not run by the test suite (it needs the collection, not a lab).
"""
import json, sys, importlib
from ansible_collections.fortinet.fortios.plugins.module_utils.fortios.fortios import FortiOSHandler

class Conn:
    def __init__(self): self.sent = []
    def send_request(self, url, data=None, method="GET", params=None, **kw):
        if params:
            url += ("&" if "?" in url else "?") + "&".join(f"{k}={v}" for k, v in params.items())
        self.sent.append({"method": method, "url": url, "body": json.loads(data) if data else None})
        if method == "GET":
            return 200, json.dumps({"http_status": 200, "status": "success", "results": [{}]})
        return 200, json.dumps({"http_status": 200, "status": "success", "revision_changed": False})
    def get_system_version(self): return "v6.4.4"

class Mod:
    def __init__(self, params): self.params = params
    def fail_json(self, *a, **k): raise SystemExit(f"fail_json {a} {k}")

TASKS72 = [
 ("system_automation_trigger", "name", {"name": "Login-Fail", "event_type": "event-log", "logid": [{"id": 32002}, {"id": 32003}], "fields": [{"id": 1, "name": "user", "value": "admin"}]}),
 ("system_automation_stitch", "name", {"name": "IOC-Quarantine", "status": "enable", "trigger": "IOC-High", "actions": [{"id": 1, "action": "Quarantine-EMS", "delay": 0, "required": "enable"}, {"id": 2, "action": "Mail-SOC", "delay": 5}]}),
 ("endpoint_control_fctems", "ems_id", {"ems_id": 1, "name": "EMS-LAB", "status": "enable", "server": "10.115.0.30", "https_port": 443, "call_timeout": 30000, "capabilities": ["fabric-auth", "websocket"]}),
]
TASKS = [
 ("firewall_address", "name", {"name": "PC-52", "type": "ipmask", "subnet": "10.115.2.52/32", "comment": "Compromised host", "associated_interface": "port3", "color": 3}),
 ("firewall_address", "name", {"name": "Lab Net/24", "subnet": "10.115.2.0 255.255.255.0"}),
 ("firewall_policy", "policyid", {"policyid": 1, "name": "LAN-out", "srcintf": [{"name": "port3"}], "dstintf": [{"name": "port1"}], "srcaddr": [{"name": "PC-52"}, {"name": "all"}], "dstaddr": [{"name": "all"}], "action": "accept", "schedule": "always", "service": [{"name": "HTTP"}, {"name": "HTTPS"}, {"name": "DNS"}], "utm_status": "enable", "inspection_mode": "flow", "ssl_ssh_profile": "certificate-inspection", "webfilter_profile": "IOC-WF", "logtraffic": "all", "nat": "enable", "status": "enable", "comments": "IOC flow"}),
 ("system_automation_trigger", "name", {"name": "IOC-High", "trigger_type": "event-based", "event_type": "ioc", "ioc_level": "high"}),
 ("system_automation_trigger", "name", {"name": "Login-Fail", "event_type": "event-log", "logid": 32002, "fields": [{"id": 1, "name": "user", "value": "admin"}]}),
 ("system_automation_action", "name", {"name": "Quarantine-EMS", "action_type": "quarantine-forticlient", "minimum_interval": 0}),
 ("system_automation_action", "name", {"name": "Mail-SOC", "action_type": "email", "email_to": [{"name": "soc@lab.example"}, {"name": "noc@lab.example"}], "email_subject": "IOC on %%log.hostname%%", "fos_message": "Host %%log.srcip%% quarantined"}),
 ("system_automation_stitch", "name", {"name": "IOC-Quarantine", "status": "enable", "trigger": "IOC-High", "action": [{"name": "Quarantine-EMS"}, {"name": "Mail-SOC"}]}),
 ("log_fortianalyzer_setting", None, {"status": "enable", "server": "10.115.0.20", "serial": [{"name": "FAZ-VM0000000001"}], "upload_option": "realtime", "reliable": "enable", "enc_algorithm": "high", "conn_timeout": 10}),
 ("webfilter_profile", "name", {"name": "IOC-WF", "comment": "IOC lab", "feature_set": "flow", "options": ["block-invalid-url", "cookiefilter"], "log_all_url": "enable", "ftgd_wf": {"options": ["error-allow"], "filters": [{"id": 1, "category": 26, "action": "block", "log": "enable"}, {"id": 2, "category": 61, "action": "block"}, {"id": 3, "category": 0, "action": "monitor"}]}}),
 ("system_global", None, {"hostname": "FGT-LAB", "admintimeout": 480, "timezone": "04", "admin_sport": 443, "language": "english"}),
 ("endpoint_control_fctems", "ems_id", {"ems_id": 1, "name": "EMS-LAB", "status": "enable", "server": "10.115.0.30", "https_port": 443, "fortinetone_cloud_authentication": "disable", "pull_sysinfo": "enable", "pull_vulnerabilities": "enable", "pull_avatars": "enable", "pull_tags": "enable", "call_timeout": 30, "capabilities": ["fabric-auth", "websocket"]}),
 ("system_interface", "name", {"name": "port3", "vdom": "root", "mode": "static", "ip": "10.115.2.1/24", "allowaccess": ["ping", "https", "ssh"], "role": "lan", "alias": "LAN", "type": "physical"}),
]

out = []
import os
for mod_name, mkey, body in (TASKS72 if os.environ.get("V72") else TASKS):
    m = importlib.import_module(f"ansible_collections.fortinet.fortios.plugins.modules.fortios_{mod_name}")
    params = {"vdom": "root", "state": "present", mod_name: body, "member_path": None, "member_state": None, "access_token": None, "enable_log": False}
    conn = Conn()
    fos = FortiOSHandler(conn, Mod(params), mkey)
    fn = getattr(m, mod_name)
    fn(params, fos, check_mode=False)
    for r in conn.sent:
        out.append({"module": mod_name, **r})
json.dump(out, sys.stdout, indent=1)
