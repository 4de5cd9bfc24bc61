"""Secret scanning: every vendor type, placeholders, no values in reports, contexts and references."""

from __future__ import annotations

import json

import pytest

from provenir.core.errors import ConfigError
from provenir.data.dataset import JsonlDataset
from provenir.governance.scanners import SECRET_TYPES, SecretScanner, SecretScanResult

LIVE = {
    "AWS_ACCESS_KEY_ID": "key AKIAZ3MSJ2KQ7XYPLW4R",
    "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key = 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",
    "GITHUB_TOKEN": "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",
    "GITHUB_FINE_GRAINED_TOKEN": "github_pat_11ABCDEFG0abcdefghijkl_" + "Ab1" * 19 + "Z9",
    "SLACK_TOKEN": "xoxb-730194628351-4820917365028-AbCdEfGhIjKlMnOpQrStUvWx",
    "SLACK_WEBHOOK": "https://hooks.slack.com/services/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",
    "STRIPE_KEY": "sk_live_51HqLyjWDarjtT1zdp7dcAbCdEf",
    "GOOGLE_API_KEY": "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
    "OPENAI_API_KEY": "sk-proj-Ab3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5zA7bC9dT3BlbkFJ",
    "ANTHROPIC_API_KEY": "sk-ant-api03-" + "aB3-dE5_fG7hI9jK1lM3" * 4 + "AA",
    "JWT": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiIsInNjb3BlIjoiYWRtaW4ifQ.c2lnbmF0dXJlLWJ5dGVzLWhlcmUtMTIzNA",
    "PRIVATE_KEY": "-----BEGIN RSA PRIVATE KEY-----\n" + "MIIEowIBAAKCAQEAx7Q2" * 5 + "\n-----END RSA PRIVATE KEY-----",
    "URL_CREDENTIALS": "redis://app:Zq9xW2vB7n@cache.prod:6379/0",
    "PASSWORD_ASSIGNMENT": "DB_PASSWORD=Tr0ub4dor&3",
    "HIGH_ENTROPY_SECRET": "client_secret: 8fJ2kL9qW3eR7tY1uI5oP0aS",
    # the formats each provider documents (see docs/governance.md, "Secret types")
    "AWS_SESSION_TOKEN": "aws_session_token = IQoJb3JpZ2luX2VjChYgCfrL1spNxnyVmihA/2O76UMFxFkM/R5Kjp1vRt+1fjORS/6ilI8ihN5KXSc7Tvo/hBKqFYY/kv5ZJr3J1TWDtkwtDDb+xHKas1VOqg6YYZYn9ZhyiA4uoRgnatmUdjAWtGSU8po+799NksnRH9ucAUsdMlHUvTCQCyEZDz/TddJ8HyS5",
    "AZURE_STORAGE_KEY": "AZURE_STORAGE_KEY=SUkCnD8zRA9a9SkpXz9w3QlY7Zkuvqdt7s8Stqcbnr3yBdGBLEPH1qhT61qtc4xatws8phP9nhFyJfm5di4PzJ==",
    "AZURE_CONNECTION_STRING": "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey=59FHz5r1pY4OjE2jBMptUsGr7CmY+uCu3ZR1zTOlUcR=",
    "AZURE_SAS_TOKEN": "https://acct.blob.core.windows.net/c/b.txt?sv=2022-11-02&sr=b&sp=r&sig=JDCTbyvHNsG9eh6Yo4gfqrc5XlrWi0B26R08qzjI6GK%3D",
    "AZURE_CLIENT_SECRET": "client secret: FSu8Q~frdZSlB5er8bOfZqfM2oeq3hDavJA76rNi",
    "GITLAB_TOKEN": "CI_TOKEN is glpat-cHTp8hkqdlm7tOtHWnsC",
    "BITBUCKET_TOKEN": "app password ATBBGRlrwZbqcabUGJmGEp7CgQ0PBQFI",
    "DISCORD_TOKEN": "bot token MTk4NjIyNDgzNDcxOTI1MjQ4.14zGtS.novm14TUOizwd1iaeOV4qBkdfQ1",
    "DISCORD_WEBHOOK": "https://discord.com/api/webhooks/987654321098765432/y3GQsMpSscDlkrCaqx9vJupc94tnwlavyfErGPmpGXafq0fjzLczbttOofL9H2WjQ5TY",
    "TELEGRAM_BOT_TOKEN": "https://api.telegram.org/bot7312456890:AA4MyWuUFjsUNPjc01T5GOBUSZGi6HWGK10/getMe",
    "SQUARE_TOKEN": "square: sq0atp-Zb0RLZ5TR9SPofbciOx9gy",
    "BRAINTREE_TOKEN": "access_token$production$29db8p5qa3e68f7e$f828767efc2f91624a8940f1f836f99e",
    "SHOPIFY_TOKEN": "X-Shopify-Access-Token: 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",
    "TWILIO_TOKEN": "twilio key SKfec94dbca3a0aac36098b2cc2bd81831",
    "SENDGRID_API_KEY": "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",
    "MAILGUN_API_KEY": "mailgun key-c35526f7eaed46725a2a7b860dcd6c8a",
    "MAILCHIMP_API_KEY": "mc 1f8b46287cced9041dff02cee737443e-us14",
    "NPM_TOKEN": "//registry.npmjs.org/:_authToken=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",
    "PYPI_TOKEN": "password = pypi-AgEIcHlwaS5vcmcfJXcaYioK6cPTt9iOqHOBSWhgetH8LmyqoYMaaItDr9uP14pEHpJpb9ATPtdbmF4RPAfqoQB7xoFcSvTAxRzmaZsV2GenFmtX0moDoqW4sg8NFNl5oFA6Qd8",
    "RUBYGEMS_API_KEY": "GEM_HOST_API_KEY=rubygems_4c1604d115cea325a65e19cbae530282bd36cb9d21f6be6a",
    "DOCKER_HUB_TOKEN": "docker login -p dckr_pat_xV5EbOApZOXzcycDeZ6dqmVe5Mv",
    "HUGGINGFACE_TOKEN": "HF_TOKEN=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",
    "COHERE_API_KEY": "COHERE_API_KEY=aZ7Vt0SXjMpu3uDxYYMfGmzWkpAePcEJIukB4geq",
    "GROQ_API_KEY": "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",
    "REPLICATE_API_TOKEN": "r8_GHoPZgPDcgaE40o1C6xc4sohdmM0Lm7exG3lC",
    "DATABRICKS_TOKEN": "dapi803b61ba4168160adb59261ff2d3c425",
    "DATADOG_KEY": "DD_API_KEY=c8d99d19bdd0b6cc60d5d32cbe54014c",
    "NEW_RELIC_KEY": "NRAK-FX6KJWSK7KEGY5MTIC4UDYFKOZM",
    "SENTRY_TOKEN": "SENTRY_AUTH_TOKEN=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",
    "OKTA_TOKEN": "Authorization: SSWS 00e1wNWqku5Nr50DjqG96EnLqNGpuxcmlzkO7rRu5y",
    "ATLASSIAN_API_TOKEN": "ATATT3xFfGF0kYYqhXHdO2x93CJHLS45gqIO2zVZxqyxKjxvWfColNV9ds0HqtO93L7Q5uUaVcojsNOBAGx5diFoNPcbdaKwtgHwIoALtLinxN1Ekia7ZpTjCgeOj3QYrzZq9adP0J5wMPLCM7HUFpk5acdIbzlpkd6XgaNJQ8mjAmHMPGPPA0=A1B2C3D4",
    "LINEAR_API_KEY": "lin_api_NlGtetOd4UYETIay2BV6DfVPClogqoPchv5V7S82",
    "NOTION_TOKEN": "ntn_qTdrOJRBRY6HqsP795nf4Gakq5p1Vm8kV6um4yvMpy62O6",
    "HEROKU_API_KEY": "HRKU-SQ1IEE1HSa2bB9UoK4tYnzNLeK6kjcbhgN7kwjSbbciSPOcSeVce2LWxm090",
    "DIGITALOCEAN_TOKEN": "dop_v1_2c376631129f34369aad80b891baf90d0d3bf16295d06910bf3f5fb85967f532",
    "CLOUDFLARE_API_TOKEN": "CLOUDFLARE_API_TOKEN=FYSJYgOuwgz7z54VfB4PbxntqB5IGky4Oo8DiIMW",
    "VAULT_TOKEN": "VAULT_TOKEN=hvs.SWMPcwLuHj31CQJVukDCSXqLoivDP4SpGmrtWT01NjUjpUuMHwkpu9mq9Ugk9QgmyjjYtUtBrmgO6grn4yDcaz2YBS",
    "DOPPLER_TOKEN": "DOPPLER_TOKEN=dp.st.prd.oGOsDbjqMVzaVp62BSKLVPA2oQUP44XPSL2oRlPh",
    "KUBERNETES_SECRET": "apiVersion: v1\nkind: Secret\ndata:\n  password: UzNjcjN0UGFzc3cwcmQh\nmetadata:\n  name: db\n",
}


@pytest.mark.parametrize("kind", sorted(LIVE))
def test_each_live_type_is_found(kind):
    result = SecretScanner().scan(JsonlDataset([{"text": LIVE[kind]}]))
    assert result.secret_types == [kind], [(f.entity_type, f.placeholder) for f in result.findings]
    assert result.has_secrets and result.records_with_secrets == 1


def test_all_types_covered():
    assert set(LIVE) == set(SECRET_TYPES)


@pytest.mark.parametrize("text,kind", [
    ("aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "AWS_ACCESS_KEY_ID"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "AWS_SECRET_ACCESS_KEY"),
    ("stripe.api_key = 'sk_test_4eC39HqLyjWDarjtT1zdp7dc'", "STRIPE_KEY"),
    ("token eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0"
     "IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c", "JWT"),
    ("GITHUB_TOKEN=ghp_" + "x" * 36, "GITHUB_TOKEN"),
    ("password = 'changeme'", "PASSWORD_ASSIGNMENT"),
])
def test_vendor_examples_are_placeholders(text, kind):
    result = SecretScanner().scan(JsonlDataset([{"text": text}]))
    assert not result.has_secrets and result.secret_types == []
    assert result.placeholder_count == 1
    assert result.findings[0].entity_type == kind and result.findings[0].placeholder


@pytest.mark.parametrize("text", [
    "password=os.environ['DB_PASSWORD']", "api_key = \"${API_KEY}\"", "token: {{ secrets.TOKEN }}",
    "password=<PASSWORD>", "Password: required.", "max_tokens=256 token_limit=4096 retries=3",
    "payload=VGhlIHF1aWNrIGJyb3duIGZveCBqdW1wcyBvdmVyIHRoZSBsYXp5IGRvZw==",
    "api_key=" + "VGhlIHF1aWNrIGJyb3duIGZveCBqdW1wcyBvdmVyIHRoZSBsYXp5IGRvZw==",
    "Install sk-learn; AKIA is the prefix of AWS key ids", "commit 3f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a39",
    "password = db_password", "eyJub3QiOiJhIGp3dCJ9 is base64 json only",
])
def test_references_prose_and_lookalikes_are_clean(text):
    result = SecretScanner().scan(JsonlDataset([{"text": text}]))
    assert result.findings == [], [(f.entity_type, f.preview) for f in result.findings]


def test_reports_never_contain_values():
    records = [{"messages": [{"role": "user", "content": v}]} for v in LIVE.values()]
    result = SecretScanner().scan(JsonlDataset(records))
    dumped = json.dumps(result.to_dict())
    for value in LIVE.values():
        for token in value.split():
            if len(token) >= 12:
                assert token not in dumped
    finding = result.findings[0]
    assert finding.preview.endswith("chars)") and "*" in finding.preview
    assert len(finding.value_hash) == 64
    assert finding.field == "messages[0].content"


def test_result_contract():
    result = SecretScanner().scan(JsonlDataset([{"a": "nothing here"}]))
    assert isinstance(result, SecretScanResult)
    assert (result.has_secrets, result.secret_types, result.record_count) == (False, [], 1)
    with pytest.raises(ConfigError):
        SecretScanner(secret_types=["PASSWORD"])
    only = SecretScanner(secret_types=["JWT"]).scan(JsonlDataset([{"t": LIVE["GITHUB_TOKEN"] + " " + LIVE["JWT"]}]))
    assert only.secret_types == ["JWT"]
