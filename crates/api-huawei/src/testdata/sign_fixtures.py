# Signs fixed requests with huaweicloudsdkcore's own Signer (a fixed X-Sdk-Date), printing
# sdk_signed.json:  target/sdk-venv/huawei/bin/python sign_fixtures.py > sdk_signed.json
import json
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

class Cred:
    ak = "AKFIXTURE0123"
    sk = "SKfixture/secret+value=="

P = "0123456789abcdef0123456789abcdef"
cases = [
    ("GET", f"/v3/{P}/elb/pools", [("limit", 10), ("marker", "a b/c"), ("name", "web-1"), ("name", "äpp")], None),
    ("POST", f"/v2/{P}/elb/pools/5a9a3e9e-d1aa-448e-af37-a70171f2a332/members", [], {"member": {"address": "10.0.0.5", "protocol_port": 80, "weight": 3}}),
    ("PUT", f"/v3/{P}/elb/pools/5a9a3e9e-d1aa-448e-af37-a70171f2a332", [], {"pool": {"lb_algorithm": "LEAST_CONNECTIONS", "name": "pool ~!*'()"}}),
    ("DELETE", f"/v2.0/lbaas/pools/5a9a3e9e-d1aa-448e-af37-a70171f2a332/members/0b3c7a52-6f7e-4d5e-9a1b-2c3d4e5f6a70", [], None),
]
out = []
for method, path, query, body in cases:
    headers = {"Content-Type": "application/json;charset=UTF-8", "X-Project-Id": P,
               "User-Agent": "huaweicloud-usdk-python/3.0", "X-Sdk-Date": "20261206T094500Z"}
    raw = json.dumps(body).encode() if body is not None else b""
    req = SdkRequest(method=method, schema="http", host="127.0.0.1:9000", resource_path=path,
                     query_params=query, header_params=headers, body=raw if body is not None else "")
    Signer(Cred()).sign(req)
    out.append({"method": method, "uri": req.uri, "headers": {k.lower(): v for k, v in req.header_params.items()},
                "body": raw.decode()})
print(json.dumps({"access_key": Cred.ak, "secret_key": Cred.sk, "requests": out}, indent=2, ensure_ascii=False))
