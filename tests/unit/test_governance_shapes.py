"""Shapes that real files hold and an earlier scanner missed or mistyped, each from its published form.

- AWS CLI output: ``aws iam create-access-key`` prints ``"SecretAccessKey"`` (AWS CLI Command Reference).
- Azure: ``AZURE_STORAGE_KEY`` is the variable the Azure CLI reads for a storage account key (``az storage``
  docs); a full storage connection string (``DefaultEndpointsProtocol=…;AccountName=…;AccountKey=…``,
  "Configure Azure Storage connection strings") is a connection string.
- Django settings hold ``SECRET_KEY`` (Django settings reference).
- Diners Club 14-digit numbers starting 38 (PayPal's sandbox test card list: 38520000023237).
- Google API keys are ``AIza`` + 35 characters of ``[A-Za-z0-9_-]``, so a key may end in ``-``; Square
  access tokens ``sq0atp-`` + 22 characters of ``[A-Za-z0-9_-]`` may end in ``_``.
- Vanity numbers: letters per ITU-T E.161 anywhere in the subscriber part (FedEx's 1-800-GO-FEDEX);
  letters past the seventh are not dialled (1-800-MATTRESS).
- A Telegram bot token (``<bot id>:<35 chars>``, Telegram Bot API docs) holds no phone number.
"""

from __future__ import annotations

import pytest

from provenir.governance._engine import Engine

KEY88 = "SUkCnD8zRA9a9SkpXz9w3QlY7Zkuvqdt7s8Stqcbnr3yBdGBLEPH1qhT61qtc4xatws8phP9nhFyJfm5di4PzJ=="


def _found(text: str) -> list[tuple[str, str, bool]]:
    return [(h.entity_type, h.value, h.placeholder) for h in Engine().scan([{"t": text}])[0].hits]


@pytest.mark.parametrize("text,etype,value", [
    ('{"AccessKey": {"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzAbC12xyQ"}}', "AWS_SECRET_ACCESS_KEY",
     "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzAbC12xyQ"),
    (f"export AZURE_STORAGE_KEY={KEY88}", "AZURE_STORAGE_KEY", KEY88),
    (f'storage_account_key = "{KEY88}"', "AZURE_STORAGE_KEY", KEY88),
    (f"AccountKey={KEY88}", "AZURE_STORAGE_KEY", KEY88),
    (f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={KEY88};EndpointSuffix=core.windows.net",
     "AZURE_CONNECTION_STRING", KEY88),
    ("SECRET_KEY = 'k9#f2Lq8zR1vX7pW3mN6bT0yH5cJ4sG8'", "HIGH_ENTROPY_SECRET", "k9#f2Lq8zR1vX7pW3mN6bT0yH5cJ4sG8"),
    ("secret_key: 9fK2Lq8zR1vX7pW3mN6bT0yH5cJ4sG8d", "HIGH_ENTROPY_SECRET", "9fK2Lq8zR1vX7pW3mN6bT0yH5cJ4sG8d"),
    ("maps key AIzaSyD3uR2bPzKx0qLmN7vT9wYcE4fJ6hG8ab- in the page", "GOOGLE_API_KEY",
     "AIzaSyD3uR2bPzKx0qLmN7vT9wYcE4fJ6hG8ab-"),
    ("SQUARE_ACCESS_TOKEN=sq0atp-AbCdEfGhIjKlMnOpQrStUv_", "SQUARE_TOKEN", "sq0atp-AbCdEfGhIjKlMnOpQrStUv_"),
])
def test_secret_shapes(text, etype, value):
    assert _found(text) == [(etype, value, False)]


def test_diners_fourteen_digits():
    assert _found("Diners 3852 000002 3237") == [("CREDIT_CARD", "3852 000002 3237", True)]  # PayPal's test number
    assert _found("card 38520000023245") == [("CREDIT_CARD", "38520000023245", False)]  # Luhn-valid, not published
    assert _found("card 38520000023246") == []  # Luhn fails


def test_ip_after_a_word_ending_in_ver_and_after_version():
    assert _found("connect to server 10.20.30.40 now") == [("IP_ADDRESS", "10.20.30.40", False)]
    assert _found("driver 10.20.30.41") == [("IP_ADDRESS", "10.20.30.41", False)]
    assert _found("ver 1.2.3.4 and version 10.0.0.1") == []


@pytest.mark.parametrize("number", ["1-866-GO-FEDEX", "1-800-FLOWERS", "1-800-MATTRESS", "(800) GO-FEDEX"])
def test_vanity_numbers(number):
    assert _found(f"call {number} today") == [("PHONE", number, False)]


def test_bot_token_holds_no_phone():
    token = "4079299660:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw2"
    assert _found(f"TELEGRAM_BOT_TOKEN={token}") == [("TELEGRAM_BOT_TOKEN", token, False)]
    assert _found(f"contact bot {token}") == [("TELEGRAM_BOT_TOKEN", token, False)]


# -- a value's own key as its context (JSON/YAML records parsed into objects) ------------------------
def _record_hits(record: dict) -> list[tuple[str, str]]:
    scan = Engine().scan([record])[0]
    return sorted((h.entity_type, scan.paths[h.leaf]) for h in scan.hits)


def test_values_under_secret_keys_are_typed_by_the_key():
    assert _record_hits({"settings": {"SecretAccessKey": "vjWC3ZGt2t1EJ3r1MtdwwBayTgE3frfcp47BQJR/", "retries": "3"}}) \
        == [("AWS_SECRET_ACCESS_KEY", "settings.SecretAccessKey")]
    assert _record_hits({"AccountKey": KEY88}) == [("AZURE_STORAGE_KEY", "AccountKey")]
    assert _record_hits({"db": {"password": "o2XW2kRM~8b1*ti~gAYIXS"}}) == [("PASSWORD_ASSIGNMENT", "db.password")]
    assert _record_hits({"heroku_api_key": "170b1207-0181-48ba-a773-91f08e8f7927"}) == [("HEROKU_API_KEY", "heroku_api_key")]
    # a key's value only: not the next key, not a list item, not a description, not a plain word
    assert _record_hits({"password": {"min_length": "12"}}) == []
    assert _record_hits({"tags": ["password", "Xy7#kq2LmP9!"]}) == []
    assert _record_hits({"password": "at least twelve characters"}) == []
    assert _record_hits({"token": "refresh"}) == []


def test_provider_named_by_host_or_header():
    uuid = "9cebcb18-732f-48db-90e9-ca27533ca81b"
    assert _found(f'curl -H "Authorization: Bearer {uuid}" https://api.heroku.com/apps') == [("HEROKU_API_KEY", uuid, False)]
    assert _found("curl -H \"DD-APPLICATION-KEY: 6e8f82f6b7eb5e1aed9a62e4e8766e1fe4b4a3e7\" https://api.datadoghq.com") \
        == [("DATADOG_KEY", "6e8f82f6b7eb5e1aed9a62e4e8766e1fe4b4a3e7", False)]
    assert _found("const cfApiToken = 'ymLfP2_mZBiw9lClbZrMl72wZHjV4WDX0M12np9Q';") \
        == [("CLOUDFLARE_API_TOKEN", "ymLfP2_mZBiw9lClbZrMl72wZHjV4WDX0M12np9Q", False)]
    netrc = "machine api.heroku.com\n  login ops\n  password " + uuid
    assert _found(netrc) == [("HEROKU_API_KEY", uuid, False)]


def test_whole_value_in_a_providers_format_belongs_to_it():
    # a ghp_ value whose CRC32 does not match is not a GitHub token, and not a generic secret either
    assert _found("GITHUB_TOKEN=ghp_E7PpUPI1iPE7Ss21EL5r14LSADBldbE8NkrQ") == []
    # a random value that merely contains "SK" + hex (Twilio's prefix) is still a generic secret
    assert _found("SecretAccessKey: dO77zqCSKFYK9e4qj4vfXKx40cc9LPFy6GSSyT5V") == [
        ("AWS_SECRET_ACCESS_KEY", "dO77zqCSKFYK9e4qj4vfXKx40cc9LPFy6GSSyT5V", False)]
    # AWS key ids are base32 after the prefix (0, 1, 8, 9 never occur)
    assert _found("key AKIA91013CXB7GIX2ZIF") == []
    # New Relic insert keys hold dashes (NRII- + 32 of [a-z0-9-])
    assert _found("NEW_RELIC_LICENSE=NRII-dmkb8nu-q6v-zshx78qx53e3oh2k97rg") == [
        ("NEW_RELIC_KEY", "NRII-dmkb8nu-q6v-zshx78qx53e3oh2k97rg", False)]


def test_dsn_userinfo_and_assembly_versions_are_not_pii():
    assert _found('SENTRY_DSN=https://93d2ed4b3d1c5cc03f2721b44a48296a@o825203.ingest.sentry.io/42') == []
    assert _found('[assembly: AssemblyVersion("7.4.2.157")]') == []


@pytest.mark.parametrize("region,number", [("FR", "01 21 26 58 90"), ("GB", "07427 962336"),
                                           ("JP", "090-1264-6674"), ("BR", "(11) 96632-4718")])
def test_national_formats_of_the_regions_asked_for(region, number):
    hits = Engine(phone_regions=(region,)).scan([{"t": f"reach them at {number}"}])[0].hits
    assert [(h.entity_type, h.value) for h in hits] == [("PHONE", number)]
    assert Engine(phone_regions=(region,)).scan([{"t": "order 1234567890123"}])[0].hits == []


# -- names in other shapes: XML settings, os.environ, prose, properties, tables ---------------------
SECRET40 = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzAbC12xyQ"
HEX32 = "39254daa70f4f91c7f3ae132844b46e2"


@pytest.mark.parametrize("text,etype,value", [
    (f'<add key="AWS_SECRET_ACCESS_KEY" value="{SECRET40}" />', "AWS_SECRET_ACCESS_KEY", SECRET40),  # .NET appSettings
    (f'os.environ["AZURE_STORAGE_KEY"] = "{KEY88}"', "AZURE_STORAGE_KEY", KEY88),
    (f"I set AWS_SECRET_ACCESS_KEY to {SECRET40}.", "AWS_SECRET_ACCESS_KEY", SECRET40),
    (f"j'ai mis webhook_secret à {HEX32}", "HIGH_ENTROPY_SECRET", HEX32),
    (f"ich habe TWILIO_AUTH_TOKEN auf {HEX32} gesetzt", "TWILIO_TOKEN", HEX32),
    (f"app.dd.api.key={HEX32}", "DATADOG_KEY", HEX32),  # Java .properties
])
def test_named_values_in_other_shapes(text, etype, value):
    assert _found(text) == [(etype, value, False)]


@pytest.mark.parametrize("text", [
    '<add key="RequestTimeout" value="30000000000" />', '<add key="api_token" value="${API_TOKEN}" />',
    "set max_tokens to 256 and retry_token to none", "I sent the auth_token to Bob yesterday",
    "id,token_count,name\n1,4096,alpha\n2,2048,beta",
    "| key | value |\n|---|---|\n| colour | blue |",
    "INSERT INTO t (id, token_budget) VALUES (1, 4096)",
])
def test_named_shapes_hard_negatives(text):
    assert _found(text) == []


def test_table_columns_name_their_cells():
    csv = f"id,aws_secret_access_key,ssn\n18,{SECRET40},219-09-9999\n19,{SECRET40[::-1]},536228741"
    found = _found(csv)
    assert ("AWS_SECRET_ACCESS_KEY", SECRET40, False) in found and ("AWS_SECRET_ACCESS_KEY", SECRET40[::-1], False) in found
    assert ("US_SSN", "219-09-9999", True) in found and ("US_SSN", "536228741", False) in found
    markdown = f"| Name | TWILIO AUTH TOKEN |\n|---|---|\n| Sipho Dlamini | {HEX32} |"
    assert _found(markdown) == [("TWILIO_TOKEN", HEX32, False)]
    sql = f"INSERT INTO creds (id, password, note) VALUES (98, 'FhfvgSQl#FNvCN2', 'x'), (99, 'Tr0ub4dor&3x', 'y')"
    assert _found(sql) == [("PASSWORD_ASSIGNMENT", "FhfvgSQl#FNvCN2", False), ("PASSWORD_ASSIGNMENT", "Tr0ub4dor&3x", False)]
    assert _record_hits({"person": {"ssn": "536228741"}}) == [("US_SSN", "person.ssn")]
    assert _record_hits({"person": {"ssn": "000228741"}}) == []  # area 000 is never issued (SSA)
