"""Writes formats.jsonl: a labelled corpus built from each type's published format document.

Every positive value is *constructed* from the rule cited for its type in :data:`SOURCES` (IIN table
and Luhn for cards, the SSA's allocation rules, the SWIFT IBAN registry and ISO 7064 mod 97-10,
libphonenumber's numbering plans, RFC 5322/3986/4291/5952/6874/7468/7519, each provider's documented
token shape and checksum). Every hard negative is built to break the same rule (wrong checksum, area
000, bad mod-97, an octet of 256, a version string, a public key, ...). Labels come from how a value
was built, never from running a scanner.

    python tests/data/governance/formats/make_formats.py           # (re)write formats.jsonl
    python tests/data/governance/formats/make_formats.py --check   # exit 1 when the file is stale

Row: {"record": {...}, "labels": [{"field", "start", "end", "type", "kind", "placeholder"}],
"carrier": name, "group": "positive:<TYPE>" | "negative:<class>", "phone_regions": [...]?}.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import os
import random
import string
import sys
import uuid
import zlib
from pathlib import Path

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "formats.jsonl"
SEED = 20261207

B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ALNUM = string.ascii_letters + string.digits
LOWER_ALNUM = string.ascii_lowercase + string.digits
UPPER_ALNUM = string.ascii_uppercase + string.digits
HEX = "0123456789abcdef"
B64 = string.ascii_uppercase + string.ascii_lowercase + string.digits + "+/"
URLSAFE = ALNUM + "_-"
BASE32_UPPER = string.ascii_uppercase + "234567"

# -- the documents each type and negative class was built from -----------------------------------
SOURCES: dict[str, str] = {
    # PII
    "EMAIL": "RFC 5322 §3.4.1 addr-spec with §3.2.3 dot-atom local parts (atext incl. + - _ and "
             "interior dots) and RFC 1035 domain labels; long TLDs from the IANA root zone (e.g. "
             ".photography, .international).",
    "PHONE": "libphonenumber numbering plans (Google), via the phonenumbers package: numbers built from "
             "example_number_for_type digits and kept only when is_valid_number; written in E.164, "
             "INTERNATIONAL and NATIONAL formats (NATIONAL rows carry phone_regions), with extensions "
             "('ext.', 'x'); US vanity numbers mapped to digits per ITU-T E.161 and validated the same way.",
    "CREDIT_CARD": "Card networks' IIN tables (ISO/IEC 7812; summarised in Wikipedia 'Payment card number'): "
                   "Visa 4 (13/16/19), Mastercard 51-55 and 2221-2720 (16), Amex 34/37 (15), Discover 6011, "
                   "644-649, 65, 622126-622925 (16/19), JCB 3528-3589 (16), Diners 36 (14), 300-305/38-39 "
                   "(14/16), UnionPay 62 (16/19), Maestro 5018/5020/5038/5893/6304/6759/6761-6763 (12-19), "
                   "Mir 2200-2204 (16), RuPay 60/65/81/82/508 (16), Dankort 5019 (16), UATP 1 (15); Luhn "
                   "(ISO/IEC 7812-1 annex B) check digit on all. Placeholders: Stripe 'Testing' card list "
                   "(docs.stripe.com/testing) and PayPal/Braintree sandbox test cards (4111111111111111, "
                   "4012888888881881, 378282246310005, 5555555555554444, ...).",
    "US_SSN": "SSA, 'Social Security Number Randomization' FAQ (ssa.gov/employer/randomizationfaqs.html): "
              "area 001-899 except 666, group 01-99, serial 0001-9999; dashed in any context, undashed / "
              "spaced / dotted only next to 'SSN' or 'social security number'. Placeholders: the SSA's "
              "advertising numbers 078-05-1120 (Woolworth wallet card) and 219-09-9999.",
    "IBAN": "SWIFT IBAN Registry (country code, length and BBAN structure per country) and ISO 13616 / "
            "ISO 7064 mod 97-10 check digits; printed in groups of 4 and compact.",
    "IP_ADDRESS": "IPv4 dotted quad (RFC 791 / RFC 4001 §3); IPv6 text forms of RFC 4291 §2.2 and RFC 5952 "
                  "(full, '::' compressed, '::1', embedded IPv4 '::ffff:a.b.c.d'), zone ids per RFC 4007 §11 "
                  "/ RFC 6874 ('fe80::1%eth0'); RFC 5737 / RFC 3849 documentation ranges included as live "
                  "IPs (they are addresses).",
    "URL_CREDENTIALS": "RFC 3986 §3.2.1 userinfo in scheme://user:password@host (postgres, postgresql, "
                       "mysql, mongodb+srv, amqp, redis, https, ftp): a pii label over 'user:password' and a "
                       "secret label over the password.",
    # secrets
    "AWS_ACCESS_KEY_ID": "AWS IAM User Guide, 'Understanding unique ID prefixes' (AKIA = access key, ASIA = "
                         "temporary STS key) + 16 characters of [A-Z2-7] (gitleaks rule aws-access-token). "
                         "Placeholder: AKIAIOSFODNN7EXAMPLE from the AWS docs.",
    "AWS_SECRET_ACCESS_KEY": "AWS docs ('Managing access keys'): 40-character base64-alphabet secret, "
                             "assigned to aws_secret_access_key / AWS_SECRET_ACCESS_KEY / SecretAccessKey. "
                             "Placeholder: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY from the AWS docs.",
    "AWS_SESSION_TOKEN": "AWS STS API reference (GetSessionToken / AssumeRole: SessionToken, a long base64 "
                         "blob; CLI credentials file key aws_session_token): base64 bodies beginning "
                         "FwoGZXIvYXdzE / IQoJb3JpZ2luX2Vj as STS issues them, assigned to aws_session_token "
                         "/ AWS_SESSION_TOKEN / SessionToken.",
    "GOOGLE_API_KEY": "Google Cloud 'Manage API keys' (keys begin 'AIza'); AIza + 35 of [A-Za-z0-9_-] "
                      "(gitleaks rule gcp-api-key).",
    "AZURE_STORAGE_KEY": "Microsoft Learn, 'Manage storage account access keys': 512-bit keys shown as 88 "
                         "base64 characters ending '==', assigned to AccountKey / AZURE_STORAGE_KEY / "
                         "AZURE_STORAGE_ACCOUNT_KEY.",
    "AZURE_CONNECTION_STRING": "Microsoft Learn, 'Configure Azure Storage connection strings': "
                               "DefaultEndpointsProtocol=https;AccountName=..;AccountKey=..;EndpointSuffix="
                               "core.windows.net; the AccountKey value is labelled.",
    "AZURE_SAS_TOKEN": "Microsoft Learn, 'Create a service SAS' / 'Identify URI and SAS parameters': sv, ss, "
                       "srt, sp, se, spr, sig query parameters; sig = URL-encoded base64 HMAC-SHA256 (32 "
                       "bytes); the sig value is labelled.",
    "AZURE_CLIENT_SECRET": "Microsoft Entra client secrets in the identifiable format: 3 characters of "
                           "[a-zA-Z0-9_~.], a digit, 'Q~', then 34 of [a-zA-Z0-9_~.-] (40 in all; gitleaks "
                           "rule azure-ad-client-secret). Note: the brief's '3 chars + Q~ + 34' omits the digit "
                           "before Q~ and would give 39 characters; the generator follows the 40-character rule.",
    "GITHUB_TOKEN": "GitHub, 'Behind GitHub's new authentication token formats' (github.blog, 2021-04-05): "
                    "prefix ghp_/gho_/ghu_/ghs_/ghr_, 30 base62 characters + 6-character base62 CRC32 of those "
                    "30, left-padded with '0' (alphabet 0-9A-Za-z).",
    "GITHUB_FINE_GRAINED_TOKEN": "GitHub Docs, 'Managing your personal access tokens' (fine-grained tokens "
                                 "begin github_pat_): github_pat_ + 22 base62 + '_' + 59 base62 (gitleaks rule "
                                 "github-fine-grained-pat: github_pat_\\w{82}).",
    "GITLAB_TOKEN": "GitLab Docs, 'GitLab token overview' (token prefixes): glpat- + 20 of [0-9A-Za-z_-] "
                    "(personal), gldt- (deploy), glrt- (runner), glptt- + 40 hex (pipeline trigger) — gitleaks "
                    "rules gitlab-pat, gitlab-deploy-token, gitlab-runner-authentication-token, gitlab-ptt.",
    "BITBUCKET_TOKEN": "Bitbucket Cloud app passwords (support.atlassian.com/bitbucket-cloud/docs/app-passwords): "
                       "ATBB + 32 alphanumerics, of which the last 8 are upper-case hex (Nosey Parker rule "
                       "np.bitbucket.1 and its example 'ATBB3g7gLXseCxPjJs1CQNMyEjwf1D12516D'; no Atlassian page "
                       "with the length was found). Access tokens (ATCTT...) are left out: no source for their "
                       "length was found.",
    "SLACK_TOKEN": "Slack API docs, 'Token types': xoxb- (bot), xoxp- (user), xoxa- (workspace), xoxe. "
                   "(rotating), xapp- (app-level); shapes per gitleaks rules slack-bot-token, slack-user-token, "
                   "slack-legacy-workspace-token, slack-config-access-token, slack-app-token.",
    "SLACK_WEBHOOK": "Slack API docs, 'Sending messages using incoming webhooks': "
                     "https://hooks.slack.com/services/T<team>/B<channel>/<24 alphanumerics> (gitleaks rule "
                     "slack-webhook-url).",
    "DISCORD_TOKEN": "Discord Developer Docs, 'Reference: Authentication' (Authorization: Bot <token>): "
                     "base64 of the bot's snowflake id, '.', 6 [A-Za-z0-9_-] (timestamp), '.', 27-38 "
                     "[A-Za-z0-9_-] (HMAC).",
    "DISCORD_WEBHOOK": "Discord Developer Docs, 'Webhook resource' (Execute Webhook: "
                       "https://discord.com/api/webhooks/{webhook.id}/{webhook.token}): 17-19 digit id, 68 "
                       "[A-Za-z0-9_-] token.",
    "TELEGRAM_BOT_TOKEN": "Telegram Bot API docs ('Authorizing your bot': token like 123456:ABC-DEF...): "
                          "8-10 digit bot id, ':', 'AA' + 33 of [A-Za-z0-9_-] (gitleaks rule "
                          "telegram-bot-api-token: digits ':' A + 34).",
    "STRIPE_KEY": "Stripe docs, 'API keys' (secret sk_live_/sk_test_, restricted rk_live_/rk_test_; keys "
                  "of 24 to 99 alphanumerics after the prefix; gitleaks rule stripe-access-token). Test-mode "
                  "keys are live secrets of the test account. Placeholder: sk_test_4eC39HqLyjWDarjtT1zdp7dc, "
                  "the example key printed in Stripe's API reference.",
    "SQUARE_TOKEN": "Square Developer docs, 'Access tokens' (production access tokens begin EAAA; OAuth "
                    "sq0atp- access tokens and sq0csp- application secrets); gitleaks rule square-access-token.",
    "BRAINTREE_TOKEN": "Braintree developer docs, 'Access tokens' (access_token$<environment>$<merchant "
                       "id>$<32 hex>), environments production and sandbox.",
    "SHOPIFY_TOKEN": "Shopify.dev, 'About authentication' / access token prefixes shpat_ (admin API), "
                     "shpca_ (custom app), shppa_ (private app), shpss_ (shared secret) + 32 hex (gitleaks "
                     "rules shopify-*).",
    "TWILIO_TOKEN": "Twilio docs, 'API keys' (API key SID SK + 32 hex; gitleaks rule twilio-api-key) and "
                    "'Auth tokens' (32 hex auth token, assigned to TWILIO_AUTH_TOKEN). The Account SID (AC + "
                    "32 hex) is an identifier ('acts as a username') and is not labelled.",
    "SENDGRID_API_KEY": "Twilio SendGrid docs, 'API keys': SG. + 22 + '.' + 43 of [A-Za-z0-9_-] (gitleaks "
                        "rule sendgrid-api-token: SG. + 66).",
    "MAILGUN_API_KEY": "Mailgun docs, 'API keys' (private key key-<32 hex>); gitleaks rule "
                       "mailgun-private-api-token.",
    "MAILCHIMP_API_KEY": "Mailchimp Marketing API 'Quick start' (API key ends with the data-center suffix "
                         "-usN): 32 hex + -us1..-us21 (gitleaks rule mailchimp-api-key).",
    "NPM_TOKEN": "GitHub blog, 'Announcing npm's new access token format' (2021-09-23): npm_ + 30 base62 + "
                 "6-character base62 CRC32 (same checksum as GitHub tokens); .npmrc _authToken lines.",
    "PYPI_TOKEN": "PyPI docs, 'API tokens' (macaroons serialized as pypi-AgEIcHlwaS5vcmc...): pypi- + "
                  "base64url of a v2 macaroon whose location is pypi.org (gitleaks rule pypi-upload-token).",
    "RUBYGEMS_API_KEY": "RubyGems guides, 'API key scopes' (keys rubygems_ + 48 hex; gitleaks rule "
                        "rubygems-api-token).",
    "DOCKER_HUB_TOKEN": "Docker docs, 'Create and manage access tokens' (PATs begin dckr_pat_, e.g. the API "
                        "reference's 'dckr_pat_124509ugsdjga93'); length 27 of [A-Za-z0-9_-] after the prefix "
                        "per leaktk/patterns issue #70.",
    "HUGGINGFACE_TOKEN": "Hugging Face Hub docs, 'User access tokens' (hf_ prefix); hf_ + 34 letters "
                         "(gitleaks rule huggingface-access-token).",
    "OPENAI_API_KEY": "OpenAI API reference, 'Authentication' (project keys sk-proj-, service accounts "
                      "sk-svcacct-, admin keys sk-admin-, legacy sk-); bodies contain the T3BlbkFJ marker "
                      "(gitleaks rule openai-api-key: 74 or 58 + T3BlbkFJ + 74 or 58; legacy 20 + T3BlbkFJ + 20).",
    "ANTHROPIC_API_KEY": "Anthropic API docs ('x-api-key' header; keys sk-ant-api03-, admin keys "
                         "sk-ant-admin01-): + 93 of [A-Za-z0-9_-] + 'AA' (gitleaks rules anthropic-api-key, "
                         "anthropic-admin-api-key).",
    "COHERE_API_KEY": "Cohere docs (CO_API_KEY environment variable): 40 alphanumerics assigned to "
                      "COHERE_API_KEY / CO_API_KEY / cohere_api_key (gitleaks rule cohere-api-token).",
    "GROQ_API_KEY": "Groq docs, 'Quickstart' (GROQ_API_KEY); keys gsk_ + 52 alphanumerics per TruffleHog's "
                    "groq detector (no provider page with the length was found).",
    "REPLICATE_API_TOKEN": "Replicate docs, 'API tokens' (REPLICATE_API_TOKEN=r8_...); r8_ + 37 "
                           "alphanumerics per TruffleHog's replicate detector.",
    "DATABRICKS_TOKEN": "Databricks docs, 'Databricks personal access tokens' (dapi...): dapi + 32 hex, "
                        "optional -N suffix (gitleaks rule databricks-api-token).",
    "DATADOG_KEY": "Datadog docs, 'API and Application Keys': API keys 32 hex (DD_API_KEY), application keys "
                   "40 hex (DD_APP_KEY), headers DD-API-KEY / DD-APPLICATION-KEY.",
    "NEW_RELIC_KEY": "New Relic docs, 'New Relic API keys': user keys NRAK- + 27, browser keys NRJS- + 19 "
                     "hex, insert keys NRII- + 32 (gitleaks rules new-relic-*).",
    "SENTRY_TOKEN": "Sentry docs, 'Auth tokens': user tokens sntryu_ + 64 hex, organization tokens sntrys_ "
                    "+ base64 JSON claims {iat, url, region_url, org} + '_' + 43 (gitleaks rules "
                    "sentry-user-token, sentry-org-token). DSNs are not labelled: Sentry documents them as "
                    "safe to keep public (see negative:sentry_dsn).",
    "OKTA_TOKEN": "Okta Developer docs, 'Create an API token' (Authorization: SSWS <token>); 42-character "
                  "tokens beginning 00 (gitleaks rule okta-access-token: 00 + 40 of [\\w=-]).",
    "ATLASSIAN_API_TOKEN": "Atlassian support, 'Manage API tokens for your Atlassian account' (tokens begin "
                           "ATATT3xFfGF0); ATATT3 + 186 of [A-Za-z0-9_=-] (gitleaks rule atlassian-api-token).",
    "LINEAR_API_KEY": "Linear developers docs, 'Personal API keys' (lin_api_ prefix): lin_api_ + 40 "
                      "alphanumerics (gitleaks rule linear-api-key).",
    "NOTION_TOKEN": "Notion developers docs, 'Authorization' (internal integration secrets: legacy secret_ "
                    "+ 43 alphanumerics, current ntn_ + 11 digits + 35 alphanumerics; gitleaks rule "
                    "notion-api-token).",
    "HEROKU_API_KEY": "Heroku Dev Center, 'Heroku CLI authentication' / API tokens: HRKU-AA + 58 of "
                      "[0-9A-Za-z_-] (gitleaks heroku-api-key-v2) and legacy UUID keys assigned to "
                      "HEROKU_API_KEY or in ~/.netrc for api.heroku.com (gitleaks heroku-api-key).",
    "DIGITALOCEAN_TOKEN": "DigitalOcean docs, 'How to create a personal access token' (token prefixes "
                          "dop_v1_, doo_v1_, dor_v1_ + 64 hex; gitleaks rules digitalocean-*).",
    "CLOUDFLARE_API_TOKEN": "Cloudflare docs, 'Create API token' (40-character tokens used as Bearer, "
                            "CLOUDFLARE_API_TOKEN / CF_API_TOKEN); gitleaks rule cloudflare-api-key.",
    "VAULT_TOKEN": "HashiCorp Vault docs, 'Tokens' (prefixes hvs. service, hvb. batch, hvr. recovery): hvs. "
                   "+ 90-120 of [\\w-], hvb. + 138-300 (gitleaks rules vault-service-token, vault-batch-token).",
    "DOPPLER_TOKEN": "Doppler docs, 'Token formats' (dp.pt. personal, dp.st. service, dp.ct. CLI) + 43 "
                     "alphanumerics (gitleaks rule doppler-api-token).",
    "JWT": "RFC 7519 §3 / RFC 7515 compact serialization: base64url(JSON header with alg, typ JWT) . "
           "base64url(JSON claims) . base64url(signature); HS256 signatures computed with HMAC-SHA256, RS256 "
           "with 256-byte signatures. Placeholder: jwt.io's debugger example token (HS256, "
           "'your-256-bit-secret').",
    "PRIVATE_KEY": "RFC 7468 textual encodings (BEGIN/END PRIVATE KEY, ENCRYPTED PRIVATE KEY), PKCS#1 "
                   "(RSA PRIVATE KEY), SEC 1 (EC PRIVATE KEY), OpenSSH PROTOCOL.key (OPENSSH PRIVATE KEY, "
                   "body 'openssh-key-v1'), RFC 4880 §6.2 armor (PGP PRIVATE KEY BLOCK); DER-shaped bodies, "
                   "64-column base64; the whole block is labelled.",
    "KUBERNETES_SECRET": "Kubernetes docs, 'Secrets' (kind: Secret; data: values are base64-encoded): every "
                         "value under data: of a Secret manifest (YAML or JSON) is labelled.",
    "PASSWORD_ASSIGNMENT": "CWE-798 / CWE-259 hard-coded passwords: random 12-24 character passwords "
                           "(letters, digits, symbols; no dictionary words) assigned to password, passwd, "
                           "pwd, DB_PASSWORD, *_PASSWORD keys in code, env, YAML, JSON, INI.",
    "HIGH_ENTROPY_SECRET": "CWE-798 hard-coded credentials: random values (hex 32-64, base64 32-48 bytes, "
                           "base62 32-48) assigned to provider-neutral names (api_key, client_secret, "
                           "auth_token, *_TOKEN, *_SECRET, secret_key) — gitleaks rule generic-api-key.",
    # negatives
    "negative:uuid": "RFC 9562 UUIDs (version 4) used as request/trace/order ids, not credentials.",
    "negative:git_sha": "Git object names: 40-hex SHA-1 commit ids in commit logs, merges and reverts.",
    "negative:sha256": "SHA-256 digests (FIPS 180-4) printed by sha256sum, Docker image digests "
                       "sha256:<64 hex>, release checksums.",
    "negative:integrity_hash": "W3C Subresource Integrity / npm lockfile integrity values "
                               "(sha512-<base64>), ETags and content hashes assigned to non-secret keys.",
    "negative:base64_prose": "RFC 4648 base64 of English prose (MIME bodies, data: payloads).",
    "negative:version_string": "Four-part version numbers after the word 'version' (Windows builds, "
                               "assembly versions): not addresses by context; some octets exceed 255.",
    "negative:isbn13": "ISO 2108 ISBN-13 (978/979 prefix, mod-10 weights 1,3 check digit) after 'ISBN'.",
    "negative:iban_bad_checksum": "IBAN-shaped references (SWIFT registry country lengths) whose ISO 7064 "
                                  "mod 97-10 check fails.",
    "negative:dates_timestamps": "ISO 8601 dates/timestamps, RFC 2822 dates, Unix epoch seconds/ms, "
                                 "compact yyyymmddhhmmss stamps.",
    "negative:luhn_fail_16": "16-digit numbers in Visa/Mastercard IIN ranges whose Luhn check fails.",
    "negative:card_outside_iin": "Luhn-valid 16-digit numbers whose IIN is in no network's range (ISO/IEC "
                                 "7812 MII 0 and 7, 16-digit numbers starting 1, prefixes 31-33).",
    "negative:ssn_invalid": "SSA randomization rules: area 000, 666 or 900-999, group 00, or serial 0000 "
                            "are never assigned.",
    "negative:ip_invalid": "Not RFC 791 / RFC 4291 addresses: an octet over 255, three octets, "
                           "'::ffff:256.0.0.1', two '::', hex groups over 4 digits or with non-hex letters.",
    "negative:non_email": "Not RFC 5322 addr-specs with a valid domain: '@handle' mentions, decorators, CSS "
                          "at-rules, npm 'pkg@1.2.3' (RFC 3696 §2: a TLD is never all-numeric), 'user@' with no "
                          "domain. Dotless 'a@b' / 'user@localhost' are left out: RFC 5322 accepts them "
                          "syntactically while RFC 5321 §2.3.5 requires FQDNs, so they are neither.",
    "negative:placeholder_values": "gitleaks global allowlist and its generic-api-key stopwords: xxxx, "
                                   "<your-key>, ${API_KEY}, os.environ[...], process.env.X, changeme, "
                                   "{{ secrets.X }}, ********, YOUR_TOKEN_HERE — references, not values.",
    "negative:github_bad_crc": "GitHub token shape (prefix + 30 base62 + 6) whose last 6 characters are "
                               "not the base62 CRC32 of the 30 (github.blog 2021-04-05), and npm_ tokens "
                               "likewise (github.blog 2021-09-23).",
    "negative:provider_wrong_shape": "Provider prefixes with the wrong length or alphabet per the rules "
                                     "cited above (AKIA + 15/17 or with 0/1/8/9, dop_v1_ + 63 hex, shpat_ + "
                                     "31 hex, rubygems_ + 47 hex, dapi + 31 hex, glpat- + 19, github_pat_ "
                                     "with short parts).",
    "negative:token_word_prose": "Hex and base64 strings in prose that mentions tokens/keys/secrets "
                                 "without assigning one (commit ids, checksums, build ids).",
    "negative:public_key_material": "RFC 7468 PUBLIC KEY / CERTIFICATE blocks and RFC 4253 ssh-ed25519 / "
                                    "ssh-rsa public keys: key material that is public by design.",
    "negative:invalid_phone": "Digit strings shaped like phone numbers that libphonenumber rejects "
                              "(is_valid_number False: NANP area codes starting 0/1, too-short national "
                              "numbers) and numeric ids (order numbers, ZIP+4, tracking numbers).",
    "negative:sentry_dsn": "Sentry docs, 'Data Source Name (DSN)': the DSN's key is public ('DSNs are safe "
                           "to keep public because they only allow submission of new events'); it has no "
                           "password part (RFC 3986 userinfo without ':password').",
}

rng = random.Random(SEED)


# -- text with labelled spans ----------------------------------------------------------------------
class Text:
    """Text assembled piece by piece; :meth:`v` appends a labelled value."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.labels: list[dict] = []
        self.n = 0

    def s(self, text: str) -> "Text":
        self.parts.append(text)
        self.n += len(text)
        return self

    def v(self, value: str, etype: str, kind: str = "secret", placeholder: bool = False) -> "Text":
        self.labels.append({"start": self.n, "end": self.n + len(value), "type": etype, "kind": kind,
                            "placeholder": placeholder})
        return self.s(value)

    def urlcred(self, user: str, password: str) -> "Text":
        start = self.n
        self.s(user + ":")
        pw_start = self.n
        self.s(password)
        self.labels.append({"start": start, "end": self.n, "type": "URL_CREDENTIALS", "kind": "pii",
                            "placeholder": False})
        self.labels.append({"start": pw_start, "end": self.n, "type": "URL_CREDENTIALS", "kind": "secret",
                            "placeholder": False})
        return self

    def str(self) -> str:
        return "".join(self.parts)


def rand(chars: str, n: int) -> str:
    return "".join(rng.choice(chars) for _ in range(n))


def pick(seq):
    return seq[rng.randrange(len(seq))]


def row(record: dict, field: str, t: Text, carrier: str, group: str, regions=None) -> dict:
    text = t.str()
    # write the text into the record at `field` (a path such as messages[1].content or config.key)
    node, steps = record, _steps(field)
    for key in steps[:-1]:
        node = node[key]
    node[steps[-1]] = text
    labels = [{"field": field, **lab} for lab in t.labels]
    for lab in labels:
        assert 0 <= lab["start"] < lab["end"] <= len(text), (group, lab)
    out = {"record": record, "labels": labels, "carrier": carrier, "group": group}
    if regions:
        out["phone_regions"] = list(regions)
    return out


def _steps(path: str) -> list:
    steps: list = []
    for part in path.split("."):
        while "[" in part:
            head, rest = part.split("[", 1)
            if head:
                steps.append(head)
            index, part = rest.split("]", 1)
            steps.append(int(index))
        if part:
            steps.append(part)
    return steps


# -- carriers --------------------------------------------------------------------------------------
SERVICES = ["billing", "ingest", "search", "notifier", "reports", "checkout", "scheduler", "gateway"]
ASK = ["why does the deploy still fail?", "is this config right?", "can you spot the problem?",
       "the worker will not start with this, any idea?", "what is wrong here?"]
ANSWER = ["The file looks well formed; check that the service reads it at start-up.",
          "Indentation is fine. Make sure the variable is exported in the same shell.",
          "Nothing is malformed. Restart the worker after changing it.",
          "That parses. The error is more likely a missing permission on the account."]


def file_record(path: str) -> dict:
    return {"path": path, "content": None}


def chat_record() -> dict:
    return {"messages": [{"role": "system", "content": "You are a helpful DevOps assistant."},
                         {"role": "user", "content": None},
                         {"role": "assistant", "content": pick(ANSWER)}]}


def _words(name: str) -> list[str]:
    """'AWS_SECRET_ACCESS_KEY' and 'SecretAccessKey' -> their lower-case words."""
    if "_" in name or name in (name.lower(), name.upper()):
        return [w.lower() for w in name.split("_") if w]
    words, cur = [], ""
    for ch in name:
        if ch.isupper() and cur:
            words.append(cur)
            cur = ""
        cur += ch
    return [w.lower() for w in words + [cur]]


def _is_camel(name: str) -> bool:
    return "_" not in name and name not in (name.lower(), name.upper())


def upper(name: str) -> str:  # env, shell, Python constants
    return "_".join(_words(name)).upper()


def snake(name: str) -> str:  # YAML / JSON keys; a documented CamelCase key (AccountKey) stays as written
    return name if _is_camel(name) else "_".join(_words(name))


def camel(name: str) -> str:  # JavaScript identifiers
    head, *rest = _words(name)
    return head + "".join(p.capitalize() for p in rest)


def assignment(carrier: str, name: str, write, group: str) -> dict:
    """One `name = value` in the syntax of ``carrier``; ``write(t)`` appends the labelled value."""
    t = Text()
    svc = pick(SERVICES)
    if carrier == "env":
        t.s(f"# {svc} service\nNODE_ENV=production\nLOG_LEVEL=info\n{upper(name)}=")
        write(t)
        t.s("\nWORKERS=4\n")
        return row(file_record(".env"), "content", t, carrier, group)
    if carrier == "shell":
        t.s(f"#!/usr/bin/env bash\nset -euo pipefail\nexport {upper(name)}=\"")
        write(t)
        t.s(f"\"\n./bin/{svc} --serve\n")
        return row(file_record(f"scripts/run-{svc}.sh"), "content", t, carrier, group)
    if carrier == "python":
        t.s(f"import {svc}_client\n\n{upper(name)} = \"")
        write(t)
        t.s(f"\"\n\nclient = {svc}_client.Client({upper(name)})\n")
        return row(file_record(f"{svc}/settings.py"), "content", t, carrier, group)
    if carrier == "javascript":
        t.s(f"const {camel(name)} = '")
        write(t)
        t.s(f"';\nmodule.exports = {{ {camel(name)} }};\n")
        return row(file_record(f"src/{svc}/config.js"), "content", t, carrier, group)
    if carrier == "yaml":
        t.s(f"{svc}:\n  enabled: true\n  {snake(name)}: ")
        write(t)
        t.s("\n  retries: 3\n")
        return row(file_record(f"config/{svc}.yaml"), "content", t, carrier, group)
    if carrier == "json":
        t.s(f"{{\n  \"service\": \"{svc}\",\n  \"{snake(name)}\": \"")
        write(t)
        t.s("\",\n  \"retries\": 3\n}\n")
        return row(file_record(f"config/{svc}.json"), "content", t, carrier, group)
    if carrier == "record":
        rec = {"service": svc, "settings": {snake(name): None, "retries": "3"}}
        write(t)
        return row(rec, f"settings.{snake(name)}", t, carrier, group)
    if carrier == "chat":
        rec = chat_record()
        t.s(f"My {svc} job reads this from the environment:\n\n{upper(name)}=")
        write(t)
        t.s(f"\n\n{pick(ASK)}")
        return row(rec, "messages[1].content", t, carrier, group)
    if carrier == "log":
        t.s(f"[{svc}-{rng.randint(1, 9)}] INFO  boot: environment loaded, {upper(name)}=")
        write(t)
        t.s(" (from env)")
        return row({"source": "app-log", "text": None}, "text", t, carrier, group)
    if carrier == "ini":
        t.s(f"[{svc}]\nenabled = true\n{snake(name)} = ")
        write(t)
        t.s("\n")
        return row(file_record(f"{svc}.ini"), "content", t, carrier, group)
    raise ValueError(carrier)


def prose(write, group: str) -> dict:
    t = Text()
    form = rng.randrange(4)
    if form == 0:
        t.s("Heads up: I pasted ")
        write(t)
        t.s(" into the team wiki by mistake. Please rotate it.")
    elif form == 1:
        t.s("The leaked credential was ")
        write(t)
        t.s(", found in an old branch during the audit.")
    elif form == 2:
        t.s("Use ")
        write(t)
        t.s(" for the staging run and delete this note afterwards.")
    else:
        t.s("Incident summary: the value ")
        write(t)
        t.s(" appeared in a public gist for two hours before it was revoked.")
    return row({"text": None}, "text", t, "prose", group)


def chat_inline(write, group: str) -> dict:
    rec = chat_record()
    t = Text()
    t.s("I keep getting 401s. The key I am using is ")
    write(t)
    t.s(f" — {pick(ASK)}")
    return row(rec, "messages[1].content", t, "chat", group)


def curl(header: str, url: str, write, group: str) -> dict:
    t = Text()
    before, after = header.split("{}")
    t.s(f"curl -sS -X GET -H \"{before}")
    write(t)
    t.s(f"{after}\" {url}")
    return row({"text": None}, "text", t, "curl", group)


# -- checksums and encodings -----------------------------------------------------------------------
def base62(value: int, width: int) -> str:
    digits = []
    while value:
        value, rest = divmod(value, 62)
        digits.append(B62[rest])
    return "".join(reversed(digits)).rjust(width, "0")


def crc_token(prefix: str) -> str:
    body = rand(B62, 30)
    return prefix + body + base62(zlib.crc32(body.encode()), 6)


def luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def luhn_ok(number: str) -> bool:
    return luhn_digit(number[:-1]) == number[-1]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


# -- PII values --------------------------------------------------------------------------------------
FIRST = ["maria", "li", "oskar", "amara", "tomas", "yuki", "priya", "noah", "ines", "kwame", "sofia", "arjun"]
LAST = ["keller", "nguyen", "okoro", "haddad", "lindqvist", "moreau", "sato", "reyes", "kowal", "brandt"]
DOMAINS = ["mail.acme-corp.com", "example.com", "post.uni-freiburg.de", "studio.photography",
           "eu.support.example.org", "ops.northwind.io", "group.international", "lists.kernel.dev",
           "finance.contoso.co.uk", "m.globex.com.br"]


def email() -> str:
    first, last = pick(FIRST), pick(LAST)
    local = pick([f"{first}.{last}", f"{first}+{pick(['billing', 'news', 'git'])}", f"{first}_{last}",
                  f"{first[0]}-{last}", f"{first}.{last}{rng.randint(2, 99)}", f"{last}.{first}.ops"])
    return f"{local}@{pick(DOMAINS)}"


REGIONS = ["US", "GB", "DE", "FR", "IN", "BR", "JP", "AU"]


def phone_number(region: str) -> phonenumbers.PhoneNumber:
    ptype = pick([PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE])
    example = phonenumbers.example_number_for_type(region, ptype)
    nsn = phonenumbers.national_significant_number(example)
    for _ in range(5000):
        keep = rng.randint(2, 4)
        candidate = nsn[:keep] + rand(string.digits, len(nsn) - keep)
        num = phonenumbers.parse(f"+{example.country_code}{candidate}")
        if phonenumbers.is_valid_number(num) and phonenumbers.number_type(num) in (
                ptype, PhoneNumberType.FIXED_LINE_OR_MOBILE):
            return num
    raise RuntimeError(f"no valid number for {region}")


E161 = {c: d for d, letters in {"2": "ABC", "3": "DEF", "4": "GHI", "5": "JKL", "6": "MNO", "7": "PQRS",
                                 "8": "TUV", "9": "WXYZ"}.items() for c in letters}
VANITY = ["FLOWERS", "PLUMBER", "DENTIST", "LAWYERS", "CONTACT", "SUPPORT", "GOTJUNK", "HOTELS4",
          "RENTALS", "MOVERSS"]


def vanity_phone() -> str:
    for _ in range(100):
        word = pick(VANITY)
        area = pick(["800", "888", "877", "866"])
        digits = "".join(E161.get(c, c) for c in word)
        if phonenumbers.is_valid_number(phonenumbers.parse(f"+1{area}{digits}")):
            return f"1-{area}-{word}"
    raise RuntimeError("no valid vanity number")


def phone_text() -> tuple[str, list | None]:
    """A valid phone number as written, and the regions needed to read it (None for +country forms)."""
    region = pick(REGIONS)
    num = phone_number(region)
    style = rng.randrange(10)
    if style in (0, 1):
        return phonenumbers.format_number(num, PhoneNumberFormat.E164), None
    if style in (2, 3, 4):
        return phonenumbers.format_number(num, PhoneNumberFormat.INTERNATIONAL), None
    if style in (5, 6, 7):
        return phonenumbers.format_number(num, PhoneNumberFormat.NATIONAL), [region]
    us = phone_number("US")
    if style == 8:
        text = phonenumbers.format_number(us, PhoneNumberFormat.NATIONAL)
        return text + pick([f" ext. {rng.randint(100, 9999)}", f" x{rng.randint(10, 999)}"]), ["US"]
    return phonenumbers.format_number(us, PhoneNumberFormat.INTERNATIONAL) + f" ext. {rng.randint(10, 9999)}", None


def _ranges(lo: int, hi: int) -> list[str]:
    return [str(p) for p in range(lo, hi + 1)]


CARD_NETWORKS = [  # (network, IIN prefixes as (low, high) ranges, lengths)
    ("visa", [(4, 4)], [16, 16, 16, 13, 19]),
    ("mastercard", [(51, 55), (2221, 2720)], [16]),
    ("amex", [(34, 34), (37, 37)], [15]),
    ("discover", [(6011, 6011), (644, 649), (65, 65), (622126, 622925)], [16, 16, 19]),
    ("jcb", [(3528, 3589)], [16]),
    ("diners", [(36, 36)], [14]),
    ("diners", [(300, 305), (38, 39)], [14, 16]),
    ("unionpay", [(62, 62)], [16, 19]),
    ("maestro", [(5018, 5018), (5020, 5020), (5038, 5038), (5893, 5893), (6304, 6304), (6759, 6759),
                 (6761, 6763)], [12, 16, 19]),
    ("mir", [(2200, 2204)], [16]),
    ("rupay", [(60, 60), (65, 65), (81, 82), (508, 508)], [16]),
    ("dankort", [(5019, 5019)], [16]),
    ("uatp", [(1, 1)], [15]),
]


def iin(ranges: list[tuple[int, int]]) -> str:
    low, high = pick(ranges)
    return str(rng.randint(low, high))

TEST_CARDS = [  # published test numbers: Stripe 'Testing' and PayPal/Braintree sandbox lists
    "4242424242424242", "4000056655665556", "5555555555554444", "2223003122003222", "5200828282828210",
    "5105105105105100", "378282246310005", "371449635398431", "6011111111111117", "6011000990139424",
    "3056930009020004", "36227206271667", "3566002020360505", "6200000000000005", "4111111111111111",
    "4012888888881881",
]


def card_number(prefix: str, length: int) -> str:
    body = prefix + rand(string.digits, length - len(prefix) - 1)
    return body + luhn_digit(body)


def card_format(number: str) -> str:
    n = len(number)
    style = rng.randrange(4)
    if style == 0:
        return number
    sep = " " if style in (1, 3) else "-"
    if n == 15:
        groups = [4, 6, 5]
    elif n == 14:
        groups = [4, 6, 4]
    else:
        groups = [4] * (n // 4) + ([n % 4] if n % 4 else [])
    out, i = [], 0
    for g in groups:
        out.append(number[i:i + g])
        i += g
    return sep.join(out)


def ssn() -> tuple[str, str, str]:
    while True:
        area = rng.randint(1, 899)
        if area != 666:
            break
    return f"{area:03d}", f"{rng.randint(1, 99):02d}", f"{rng.randint(1, 9999):04d}"


IBAN_FORMATS = {  # SWIFT IBAN registry BBAN structure: n digits, a upper letters, c alphanumerics
    "DE": "18n", "GB": "4a14n", "FR": "10n11c2n", "ES": "20n", "IT": "1a10n12c", "NL": "4a10n", "BE": "12n",
    "CH": "5n12c", "AT": "16n", "PL": "24n", "SE": "20n", "NO": "11n", "DK": "14n", "FI": "14n", "IE": "4a14n",
    "PT": "21n", "LU": "3n13c", "SA": "2n18c", "AE": "3n16n", "BR": "8n5n10n1a1c", "MT": "4a5n18c",
    "TR": "5n1n16c",
}


def _bban(spec: str) -> str:
    out, num = [], ""
    for ch in spec:
        if ch.isdigit():
            num += ch
            continue
        chars = {"n": string.digits, "a": string.ascii_uppercase, "c": UPPER_ALNUM}[ch]
        out.append(rand(chars, int(num)))
        num = ""
    return "".join(out)


def iban_check(country: str, bban: str) -> str:
    number = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    return f"{98 - number % 97:02d}"


def iban_mod97_ok(iban: str) -> bool:
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def iban() -> str:
    country = pick(sorted(IBAN_FORMATS))
    bban = _bban(IBAN_FORMATS[country])
    value = country + iban_check(country, bban) + bban
    assert iban_mod97_ok(value)
    return value


def iban_format(value: str) -> str:
    if rng.random() < 0.5:
        return value
    return " ".join(value[i:i + 4] for i in range(0, len(value), 4))


def ipv4() -> str:
    style = rng.randrange(6)
    if style == 0:
        return f"{pick(['192.0.2', '198.51.100', '203.0.113'])}.{rng.randint(1, 254)}"
    if style == 1:
        return f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    if style == 2:
        return f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    first = pick([f for f in range(1, 224) if f not in (10, 127)])
    return f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def ipv6() -> str:
    style = rng.randrange(6)
    groups = [rng.randint(0, 0xFFFF) for _ in range(8)]
    if style == 0:  # full, RFC 4291 §2.2 form 1
        return ":".join(f"{g:04x}" for g in [0x2001, 0x0db8] + groups[2:])
    if style == 1:  # compressed, RFC 5952
        g = [0x2001, 0x0db8, groups[2], 0, 0, 0, groups[6], groups[7]]
        return ipaddress.IPv6Address(":".join(f"{x:x}" for x in g)).compressed
    if style == 2:
        g = [pick([0x2a00, 0x2607, 0x2400, 0x2804])] + groups[1:4] + [0, 0] + groups[6:]
        return ipaddress.IPv6Address(":".join(f"{x:x}" for x in g)).compressed
    if style == 3:
        return pick(["::1", f"fe80::{groups[0]:x}:{groups[1]:x}%eth0", f"fe80::{groups[2]:x}%en0"])
    if style == 4:
        return f"::ffff:{ipv4()}"
    return ipaddress.IPv6Address(":".join(f"{x:x}" for x in groups)).exploded


# -- PII rows ----------------------------------------------------------------------------------------
def pii_row(etype: str, carrier: str, write, group: str, regions=None) -> dict:
    t = Text()
    if carrier == "prose":
        t.s(pick(["Please update the contact to ", "Customer note: reach them at ", "Forwarding details: "]))
        write(t)
        t.s(pick([" before Friday.", " if the order is delayed.", " — thanks!"]))
        return row({"text": None}, "text", t, carrier, group, regions)
    if carrier == "chat":
        rec = chat_record()
        rec["messages"][0]["content"] = "You are a customer support assistant."
        rec["messages"][2]["content"] = "Thanks, I have noted that on the account."
        t.s(pick(["Hi, my details changed. New one: ", "Can you update my profile? Use ", "It is "]))
        write(t)
        t.s(pick(["", " please.", ". Thank you."]))
        return row(rec, "messages[1].content", t, carrier, group, regions)
    if carrier == "json":
        key = {"EMAIL": "email", "PHONE": "phone", "CREDIT_CARD": "card_number", "US_SSN": "ssn",
               "IBAN": "iban", "IP_ADDRESS": "client_ip"}[etype]
        rec = {"customer": {"id": f"cus_{rand(LOWER_ALNUM, 6)}", key: None}}
        write(t)
        return row(rec, f"customer.{key}", t, carrier, group, regions)
    if carrier == "log":
        key = {"EMAIL": "user", "PHONE": "callback", "CREDIT_CARD": "pan", "US_SSN": "ssn", "IBAN": "account",
               "IP_ADDRESS": "remote_addr"}[etype]
        t.s(f"level=warn msg=\"validation failed\" {key}=")
        write(t)
        t.s(" status=rejected")
        return row({"source": "app-log", "text": None}, "text", t, carrier, group, regions)
    if carrier == "yaml":
        key = {"EMAIL": "contact_email", "PHONE": "contact_phone", "CREDIT_CARD": "card", "US_SSN": "ssn",
               "IBAN": "payout_iban", "IP_ADDRESS": "bind_address"}[etype]
        t.s(f"owner:\n  team: platform\n  {key}: ")
        write(t)
        t.s("\n")
        return row(file_record("owners.yaml"), "content", t, carrier, group, regions)
    if carrier == "csv":
        key = {"EMAIL": "email", "PHONE": "phone", "CREDIT_CARD": "card", "US_SSN": "ssn", "IBAN": "iban",
               "IP_ADDRESS": "ip"}[etype]
        t.s(f"id,name,{key},status\n{rng.randint(100, 999)},{pick(LAST).capitalize()},")
        write(t)
        t.s(",active\n")
        return row(file_record("export.csv"), "content", t, carrier, group, regions)
    raise ValueError(carrier)


PII_CARRIERS = ["prose", "chat", "json", "log", "yaml", "csv"]


def gen_email() -> list[dict]:
    out = []
    for i in range(42):
        value = email()
        out.append(pii_row("EMAIL", PII_CARRIERS[i % 6], lambda t, v=value: t.v(v, "EMAIL", "pii"),
                           "positive:EMAIL"))
    return out


def gen_phone() -> list[dict]:
    out = []
    for i in range(44):
        if i % 11 == 10:
            value, regions = vanity_phone(), ["US"]
        else:
            value, regions = phone_text()
        out.append(pii_row("PHONE", PII_CARRIERS[i % 6], lambda t, v=value: t.v(v, "PHONE", "pii"),
                           "positive:PHONE", regions))
    return out


def gen_card() -> list[dict]:
    out = []
    for i in range(52):
        network, prefixes, lengths = CARD_NETWORKS[i % len(CARD_NETWORKS)]
        number = card_number(iin(prefixes), pick(lengths))
        assert luhn_ok(number)
        value = card_format(number)
        out.append(pii_row("CREDIT_CARD", PII_CARRIERS[i % 6],
                           lambda t, v=value: t.v(v, "CREDIT_CARD", "pii"), "positive:CREDIT_CARD"))
    for i, number in enumerate(TEST_CARDS):  # published test cards: placeholders
        value = card_format(number)
        out.append(pii_row("CREDIT_CARD", PII_CARRIERS[(i + 1) % 6],
                           lambda t, v=value: t.v(v, "CREDIT_CARD", "pii", True), "positive:CREDIT_CARD"))
    return out


def gen_ssn() -> list[dict]:
    out = []
    for i in range(42):
        a, g, s = ssn()
        style = i % 4
        if style < 2:
            value = f"{a}-{g}-{s}"
            out.append(pii_row("US_SSN", PII_CARRIERS[i % 6], lambda t, v=value: t.v(v, "US_SSN", "pii"),
                               "positive:US_SSN"))
            continue
        value = pick([f"{a}{g}{s}", f"{a} {g} {s}", f"{a}.{g}.{s}"])
        t = Text()
        t.s(pick(["Employee SSN: ", "social security number ", "SSN ", "Applicant's Social Security Number is "]))
        t.v(value, "US_SSN", "pii")
        t.s(pick([" (verified).", "", " — on file."]))
        out.append(row({"text": None}, "text", t, "prose" if style == 2 else "form", "positive:US_SSN"))
    for i, value in enumerate(["078-05-1120", "219-09-9999", "078-05-1120", "219-09-9999"]):
        out.append(pii_row("US_SSN", PII_CARRIERS[i % 6], lambda t, v=value: t.v(v, "US_SSN", "pii", True),
                           "positive:US_SSN"))
    return out


def gen_iban() -> list[dict]:
    out = []
    for i in range(42):
        value = iban_format(iban())
        out.append(pii_row("IBAN", PII_CARRIERS[i % 6], lambda t, v=value: t.v(v, "IBAN", "pii"),
                           "positive:IBAN"))
    return out


def gen_ip() -> list[dict]:
    out = []
    for i in range(44):
        value = ipv4() if i % 2 == 0 else ipv6()
        carrier = PII_CARRIERS[i % 6]
        if i % 7 == 3:  # nginx / firewall config
            t = Text()
            t.s("location /admin {\n    allow ")
            t.v(value, "IP_ADDRESS", "pii")
            t.s(";\n    deny all;\n}\n")
            out.append(row(file_record("nginx/admin.conf"), "content", t, "nginx", "positive:IP_ADDRESS"))
            continue
        out.append(pii_row("IP_ADDRESS", carrier, lambda t, v=value: t.v(v, "IP_ADDRESS", "pii"),
                           "positive:IP_ADDRESS"))
    return out


URL_SCHEMES = [("postgres", "5432", "/orders"), ("postgresql", "5432", "/analytics"), ("mysql", "3306", "/shop"),
               ("mongodb+srv", "", "/app?retryWrites=true"), ("amqp", "5672", "/vhost"), ("redis", "6379", "/0"),
               ("https", "", "/simple/"), ("ftp", "21", "/incoming/")]
URL_HOSTS = ["db.internal.acme-corp.com", "cluster0.x1y2z.mongodb.net", "mq.prod.northwind.io",
             "cache-01.eu-west.globex.net", "packages.contoso.dev", "files.example.org"]
PW_CHARS = ALNUM + "-._~!*"


def url_password() -> str:
    return rand(ALNUM, 4) + rand(PW_CHARS, rng.randint(10, 18)) + rand(string.digits, 2)


def gen_url_credentials() -> list[dict]:
    out = []
    carriers = ["env", "yaml", "python", "log", "chat", "json"]
    for i in range(40):
        scheme, port, path = URL_SCHEMES[i % len(URL_SCHEMES)]
        host = pick(URL_HOSTS) + (f":{port}" if port else "")
        user = pick(["app", "svc_orders", "etl", "deploy", "readonly", "admin"])
        pw = url_password()

        def write(t, scheme=scheme, host=host, path=path, user=user, pw=pw):
            t.s(f"{scheme}://")
            t.urlcred(user, pw)
            t.s(f"@{host}{path}")

        carrier = carriers[i % len(carriers)]
        if carrier == "log":
            t = Text()
            t.s("[worker] INFO connecting to ")
            write(t)
            t.s(" (attempt 1)")
            out.append(row({"source": "app-log", "text": None}, "text", t, "log", "positive:URL_CREDENTIALS"))
        elif carrier == "chat":
            out.append(chat_inline(write, "positive:URL_CREDENTIALS"))
        else:
            out.append(assignment(carrier, "DATABASE_URL" if i % 2 else "BROKER_URL", write,
                                  "positive:URL_CREDENTIALS"))
    return out


# -- secret values -----------------------------------------------------------------------------------
def aws_key_id() -> str:
    return pick(["AKIA", "AKIA", "ASIA"]) + rand(BASE32_UPPER, 16)


def aws_secret() -> str:
    return rand(ALNUM + "+/", 40)


def aws_session() -> str:
    head = pick(["FwoGZXIvYXdzE", "IQoJb3JpZ2luX2Vj"])
    body = b64(rng.randbytes(rng.choice([240, 300, 330])))
    return head + body.rstrip("=")


def google_key() -> str:
    return "AIza" + rand(URLSAFE, 35)


def azure_storage_key() -> str:
    value = b64(rng.randbytes(64))
    assert len(value) == 88 and value.endswith("==")
    return value


def azure_sig() -> str:
    raw = b64(rng.randbytes(32))
    return raw.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")


def azure_client_secret() -> str:
    chars = ALNUM + "_~."
    value = rand(chars, 3) + rng.choice(string.digits) + "Q~" + rand(chars + "-", 34)
    assert len(value) == 40
    return value


def github_token() -> str:
    return crc_token(pick(["ghp_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_"]))


def github_fine() -> str:
    return "github_pat_" + rand(B62, 22) + "_" + rand(B62, 59)


def gitlab_token() -> str:
    kind = rng.randrange(5)
    if kind <= 1:
        return "glpat-" + rand(URLSAFE, 20)
    if kind == 2:
        return "gldt-" + rand(URLSAFE, 20)
    if kind == 3:
        return "glrt-" + rand(URLSAFE, 20)
    return "glptt-" + rand(HEX, 40)


def bitbucket_token() -> str:
    return "ATBB" + rand(B62, 24) + rand("0123456789ABCDEF", 8)


def slack_token() -> str:
    kind = rng.randrange(5)
    d = lambda: str(rng.randint(10 ** 10, 10 ** 13 - 1))  # noqa: E731
    if kind == 0:
        return f"xoxb-{d()}-{d()}-{rand(ALNUM, 24)}"
    if kind == 1:
        return f"xoxp-{d()}-{d()}-{d()}-{rand(HEX, 32)}"
    if kind == 2:
        return f"xoxa-2-{rand(ALNUM, 40)}"
    if kind == 3:
        return f"xoxe.xoxp-1-{rand(UPPER_ALNUM, 164)}"
    return f"xapp-1-A{rand(UPPER_ALNUM, 10)}-{d()}-{rand(HEX, 64)}"


def slack_webhook() -> str:
    return (f"https://hooks.slack.com/services/T{rand(UPPER_ALNUM, rng.randint(8, 10))}/"
            f"B{rand(UPPER_ALNUM, rng.randint(8, 10))}/{rand(ALNUM, 24)}")


def discord_token() -> str:
    snowflake = str(rng.randint(10 ** 16, 15 * 10 ** 17))  # 64-bit snowflakes in use today
    return f"{b64url(snowflake.encode())}.{rand(URLSAFE, 6)}.{rand(URLSAFE, rng.randint(27, 38))}"


def discord_webhook() -> str:
    host = pick(["discord.com", "discord.com", "discordapp.com"])
    return f"https://{host}/api/webhooks/{rng.randint(10 ** 16, 15 * 10 ** 17)}/{rand(URLSAFE, 68)}"


def telegram_token() -> str:
    return f"{rng.randint(10 ** 7, 10 ** 10 - 1)}:AA{rand(URLSAFE, 33)}"


def stripe_key() -> str:
    prefix = pick(["sk_live_", "sk_live_", "rk_live_", "sk_test_", "rk_test_"])
    return prefix + rand(ALNUM, pick([24, 99]))


def square_token() -> str:
    kind = rng.randrange(3)
    if kind == 0:
        return "EAAA" + rand(URLSAFE, 60)
    if kind == 1:
        return "sq0atp-" + rand(URLSAFE, 22)
    return "sq0csp-" + rand(URLSAFE, 43)


def braintree_token() -> str:
    return f"access_token${pick(['production', 'production', 'sandbox'])}${rand(LOWER_ALNUM, 16)}${rand(HEX, 32)}"


def shopify_token() -> str:
    return pick(["shpat_", "shpca_", "shppa_", "shpss_"]) + rand(HEX, 32)


def mailchimp_key() -> str:
    return rand(HEX, 32) + f"-us{rng.randint(1, 21)}"


def pypi_token() -> str:
    ident = str(uuid.UUID(int=rng.getrandbits(128), version=4)).encode()
    caveat = json.dumps({"version": 1, "permissions": {"projects": [pick(SERVICES) + "-sdk"]}}).encode()
    macaroon = (b"\x02\x01\x08pypi.org\x02" + bytes([len(ident)]) + ident + b"\x00\x02"
                + bytes([len(caveat)]) + caveat + b"\x00\x00\x06\x20" + rng.randbytes(32))
    value = "pypi-" + b64url(macaroon)
    assert value.startswith("pypi-AgEIcHlwaS5vcmc"), value[:24]
    return value


def openai_key() -> str:
    kind = rng.randrange(4)
    if kind == 3:
        return "sk-" + rand(ALNUM, 20) + "T3BlbkFJ" + rand(ALNUM, 20)
    prefix = ["sk-proj-", "sk-svcacct-", "sk-admin-"][kind]
    n = pick([74, 58])
    return prefix + rand(URLSAFE, n) + "T3BlbkFJ" + rand(URLSAFE, n)


def anthropic_key() -> str:
    prefix = pick(["sk-ant-api03-", "sk-ant-api03-", "sk-ant-api03-", "sk-ant-admin01-"])
    return prefix + rand(URLSAFE, 93) + "AA"


def new_relic_key() -> str:
    kind = rng.randrange(3)
    if kind == 0:
        return "NRAK-" + rand(UPPER_ALNUM, 27)
    if kind == 1:
        return "NRJS-" + rand(HEX, 19)
    return "NRII-" + rand(LOWER_ALNUM + "-", 32)


def sentry_token() -> str:
    if rng.random() < 0.5:
        return "sntryu_" + rand(HEX, 64)
    org = pick(SERVICES) + "-team"
    claims = json.dumps({"iat": rng.randint(1_700_000_000, 1_790_000_000), "url": "https://sentry.io",
                         "region_url": "https://us.sentry.io", "org": org}, separators=(",", ":"))
    payload = b64(claims.encode()).rstrip("=")
    assert payload.startswith("eyJpYXQiO")
    return f"sntrys_{payload}_{rand(ALNUM + '+/', 43)}"


def okta_token() -> str:
    return "00" + rand(URLSAFE, 40)


def atlassian_token() -> str:
    return "ATATT3xFfGF0" + rand(URLSAFE, 171) + "=" + rand("0123456789ABCDEF", 8)


def notion_token() -> str:
    if rng.random() < 0.5:
        return "secret_" + rand(ALNUM, 43)
    return "ntn_" + rand(string.digits, 11) + rand(ALNUM, 35)


def heroku_key() -> str:
    if rng.random() < 0.5:
        return "HRKU-AA" + rand(URLSAFE, 58)
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def vault_token() -> str:
    kind = rng.randrange(4)
    if kind <= 1:
        return "hvs." + "CAESI" + rand(URLSAFE, rng.randint(86, 110))
    if kind == 2:
        return "hvb." + "AAAAAQ" + rand(URLSAFE, rng.randint(134, 160))
    return "hvr." + "CAESI" + rand(URLSAFE, rng.randint(86, 100))


def jwt_token(secret: bytes | None = None) -> str:
    alg = pick(["HS256", "HS256", "RS256", "ES256"])
    header = {"alg": alg, "typ": "JWT"}
    if rng.random() < 0.4:
        header["kid"] = rand(LOWER_ALNUM, 8)
    iat = rng.randint(1_700_000_000, 1_790_000_000)
    claims = {"sub": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "iat": iat, "exp": iat + 3600,
              "scope": pick(["read:orders", "admin", "write:files read:files"])}
    if rng.random() < 0.5:
        claims["iss"] = f"https://auth.{pick(['acme-corp.com', 'northwind.io', 'globex.net'])}/"
    signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                     + b64url(json.dumps(claims, separators=(",", ":")).encode()))
    if alg == "HS256":
        sig = hmac.new(secret or rng.randbytes(32), signing_input.encode(), hashlib.sha256).digest()
    elif alg == "RS256":
        sig = rng.randbytes(256)
    else:
        sig = rng.randbytes(64)
    return signing_input + "." + b64url(sig)


JWT_IO_EXAMPLE = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0"
                  "IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")


def _jwt_io_is_what_jwt_io_says() -> bool:
    head, body, sig = JWT_IO_EXAMPLE.split(".")
    expect = hmac.new(b"your-256-bit-secret", f"{head}.{body}".encode(), hashlib.sha256).digest()
    return b64url(expect) == sig


PEM_KINDS = [  # (label, DER prefix bytes, body length)
    ("RSA PRIVATE KEY", bytes.fromhex("308204a40201000282010100"), 1180),
    ("PRIVATE KEY", bytes.fromhex("308204bd020100300d06092a864886f70d0101010500048204a7"), 1190),
    ("EC PRIVATE KEY", bytes.fromhex("307702010104"), 115),
    ("ENCRYPTED PRIVATE KEY", bytes.fromhex("308205243056"), 1290),
    ("OPENSSH PRIVATE KEY", b"openssh-key-v1\x00\x00\x00\x00\x04none\x00\x00\x00\x04none", 380),
    ("PGP PRIVATE KEY BLOCK", bytes.fromhex("9503c604"), 900),
]


def pem_block(kind: int) -> str:
    label, head, length = PEM_KINDS[kind]
    body = b64(head + rng.randbytes(length - len(head)))
    width = 70 if "OPENSSH" in label else 64
    lines = [body[i:i + width] for i in range(0, len(body), width)]
    if "PGP" in label:
        crc = b64(rng.randbytes(3))
        return (f"-----BEGIN {label}-----\n\n" + "\n".join(lines) + f"\n={crc}\n-----END {label}-----")
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----"


def password() -> str:
    specials = "!%&*+-=?^_~"  # no '#', '$', '@', '.': comment, expansion and e-mail look-alikes
    chars = [rng.choice(string.ascii_uppercase), rng.choice(string.ascii_lowercase), rng.choice(string.digits),
             rng.choice(specials)]
    chars += [rng.choice(ALNUM + specials) for _ in range(rng.randint(8, 20))]
    rng.shuffle(chars)
    return rng.choice(ALNUM) + "".join(chars)  # a leading letter/digit keeps YAML plain scalars plain


def high_entropy() -> str:
    kind = rng.randrange(4)
    if kind == 0:
        return rand(HEX, pick([32, 40, 64]))
    if kind == 1:
        return b64(rng.randbytes(pick([32, 48])))
    if kind == 2:
        return rand(B62, rng.randint(32, 48))
    return b64url(rng.randbytes(32))


# -- secret rows -------------------------------------------------------------------------------------
GENERIC = ["env", "shell", "python", "javascript", "yaml", "json", "record", "chat", "log", "ini"]

# type: (value generator, names, carriers, (header template, url) or None, prefix-distinctive for prose)
SECRETS = {
    "AWS_ACCESS_KEY_ID": (aws_key_id, ["AWS_ACCESS_KEY_ID"], GENERIC, None, True),
    "AWS_SECRET_ACCESS_KEY": (aws_secret, ["AWS_SECRET_ACCESS_KEY", "SecretAccessKey"],
                              ["env", "shell", "python", "yaml", "json", "record", "chat", "ini"], None, False),
    "AWS_SESSION_TOKEN": (aws_session, ["AWS_SESSION_TOKEN", "SessionToken"],
                          ["env", "shell", "python", "yaml", "json", "record", "chat", "ini"], None, False),
    "GOOGLE_API_KEY": (google_key, ["GOOGLE_API_KEY", "MAPS_API_KEY"], GENERIC, None, True),
    "AZURE_STORAGE_KEY": (azure_storage_key, ["AZURE_STORAGE_KEY", "AZURE_STORAGE_ACCOUNT_KEY", "AccountKey"],
                          ["env", "shell", "python", "yaml", "json", "record", "chat"], None, False),
    "AZURE_CLIENT_SECRET": (azure_client_secret, ["AZURE_CLIENT_SECRET", "ClientSecret"], GENERIC, None, True),
    "GITHUB_TOKEN": (github_token, ["GITHUB_TOKEN", "GH_TOKEN"], GENERIC,
                     ("Authorization: token {}", "https://api.github.com/user/repos"), True),
    "GITHUB_FINE_GRAINED_TOKEN": (github_fine, ["GITHUB_TOKEN", "GH_PAT"], GENERIC,
                                  ("Authorization: Bearer {}", "https://api.github.com/repos/acme/app"), True),
    "GITLAB_TOKEN": (gitlab_token, ["GITLAB_TOKEN", "CI_DEPLOY_TOKEN"], GENERIC,
                     ("PRIVATE-TOKEN: {}", "https://gitlab.com/api/v4/projects"), True),
    "BITBUCKET_TOKEN": (bitbucket_token, ["BITBUCKET_TOKEN", "BITBUCKET_APP_PASSWORD"], GENERIC,
                        ("Authorization: Bearer {}", "https://api.bitbucket.org/2.0/repositories/acme"), True),
    "SLACK_TOKEN": (slack_token, ["SLACK_BOT_TOKEN", "SLACK_TOKEN"], GENERIC,
                    ("Authorization: Bearer {}", "https://slack.com/api/auth.test"), True),
    "SLACK_WEBHOOK": (slack_webhook, ["SLACK_WEBHOOK_URL", "ALERTS_WEBHOOK"], GENERIC, None, True),
    "DISCORD_TOKEN": (discord_token, ["DISCORD_BOT_TOKEN", "DISCORD_TOKEN"], GENERIC,
                      ("Authorization: Bot {}", "https://discord.com/api/v10/users/@me"), False),
    "DISCORD_WEBHOOK": (discord_webhook, ["DISCORD_WEBHOOK_URL", "DEPLOY_HOOK"], GENERIC, None, True),
    "TELEGRAM_BOT_TOKEN": (telegram_token, ["TELEGRAM_BOT_TOKEN", "TELEGRAM_TOKEN"],
                           ["env", "shell", "python", "javascript", "yaml", "json", "record", "chat", "ini"],
                           None, False),
    "STRIPE_KEY": (stripe_key, ["STRIPE_SECRET_KEY", "STRIPE_API_KEY"], GENERIC, None, True),
    "SQUARE_TOKEN": (square_token, ["SQUARE_ACCESS_TOKEN", "SQUARE_TOKEN"], GENERIC,
                     ("Authorization: Bearer {}", "https://connect.squareup.com/v2/locations"), True),
    "BRAINTREE_TOKEN": (braintree_token, ["BRAINTREE_ACCESS_TOKEN", "BT_ACCESS_TOKEN"], GENERIC, None, True),
    "SHOPIFY_TOKEN": (shopify_token, ["SHOPIFY_ACCESS_TOKEN", "SHOPIFY_API_SECRET"], GENERIC,
                      ("X-Shopify-Access-Token: {}", "https://acme.myshopify.com/admin/api/2024-01/shop.json"), True),
    "TWILIO_TOKEN": (lambda: "SK" + rand(HEX, 32), ["TWILIO_API_KEY", "TWILIO_API_KEY_SID"], GENERIC, None, True),
    "SENDGRID_API_KEY": (lambda: "SG." + rand(URLSAFE, 22) + "." + rand(URLSAFE, 43), ["SENDGRID_API_KEY"], GENERIC,
                         ("Authorization: Bearer {}", "https://api.sendgrid.com/v3/scopes"), True),
    "MAILGUN_API_KEY": (lambda: "key-" + rand(HEX, 32), ["MAILGUN_API_KEY", "MAILGUN_KEY"],
                        ["env", "shell", "python", "javascript", "yaml", "json", "record", "chat", "ini"], None, False),
    "MAILCHIMP_API_KEY": (mailchimp_key, ["MAILCHIMP_API_KEY", "MAILCHIMP_KEY"],
                          ["env", "shell", "python", "javascript", "yaml", "json", "record", "chat", "ini"], None,
                          False),
    "NPM_TOKEN": (lambda: crc_token("npm_"), ["NPM_TOKEN", "NODE_AUTH_TOKEN"], GENERIC,
                  ("Authorization: Bearer {}", "https://registry.npmjs.org/-/whoami"), True),
    "PYPI_TOKEN": (pypi_token, ["PYPI_TOKEN", "TWINE_PASSWORD"], GENERIC, None, True),
    "RUBYGEMS_API_KEY": (lambda: "rubygems_" + rand(HEX, 48), ["GEM_HOST_API_KEY", "RUBYGEMS_API_KEY"], GENERIC,
                         ("Authorization: {}", "https://rubygems.org/api/v1/gems.json"), True),
    "DOCKER_HUB_TOKEN": (lambda: "dckr_pat_" + rand(URLSAFE, 27), ["DOCKERHUB_TOKEN", "DOCKER_PASSWORD"], GENERIC,
                         None, True),
    "HUGGINGFACE_TOKEN": (lambda: "hf_" + rand(string.ascii_letters, 34), ["HF_TOKEN", "HUGGINGFACE_HUB_TOKEN"],
                          GENERIC, ("Authorization: Bearer {}", "https://huggingface.co/api/whoami-v2"), True),
    "OPENAI_API_KEY": (openai_key, ["OPENAI_API_KEY"], GENERIC,
                       ("Authorization: Bearer {}", "https://api.openai.com/v1/models"), True),
    "ANTHROPIC_API_KEY": (anthropic_key, ["ANTHROPIC_API_KEY"], GENERIC,
                          ("x-api-key: {}", "https://api.anthropic.com/v1/models"), True),
    "COHERE_API_KEY": (lambda: rand(ALNUM, 40), ["COHERE_API_KEY", "CO_API_KEY"],
                       ["env", "shell", "python", "javascript", "yaml", "json", "record", "chat", "ini"], None, False),
    "GROQ_API_KEY": (lambda: "gsk_" + rand(ALNUM, 52), ["GROQ_API_KEY"], GENERIC,
                     ("Authorization: Bearer {}", "https://api.groq.com/openai/v1/models"), True),
    "REPLICATE_API_TOKEN": (lambda: "r8_" + rand(ALNUM, 37), ["REPLICATE_API_TOKEN"], GENERIC,
                            ("Authorization: Bearer {}", "https://api.replicate.com/v1/account"), True),
    "DATABRICKS_TOKEN": (lambda: "dapi" + rand(HEX, 32) + pick(["", "", "-2"]), ["DATABRICKS_TOKEN"], GENERIC,
                         ("Authorization: Bearer {}", "https://adb-1234.azuredatabricks.net/api/2.0/clusters/list"),
                         True),
    "DATADOG_KEY": (None, None, None, None, False),  # built below (API vs application key names)
    "NEW_RELIC_KEY": (new_relic_key, ["NEW_RELIC_API_KEY", "NEW_RELIC_LICENSE"], GENERIC,
                      ("API-Key: {}", "https://api.newrelic.com/graphql"), True),
    "SENTRY_TOKEN": (sentry_token, ["SENTRY_AUTH_TOKEN"], GENERIC,
                     ("Authorization: Bearer {}", "https://sentry.io/api/0/organizations/"), True),
    "OKTA_TOKEN": (okta_token, ["OKTA_API_TOKEN", "OKTA_TOKEN"],
                   ["env", "shell", "python", "javascript", "yaml", "json", "record", "chat", "ini"],
                   ("Authorization: SSWS {}", "https://acme.okta.com/api/v1/users?limit=25"), False),
    "ATLASSIAN_API_TOKEN": (atlassian_token, ["JIRA_API_TOKEN", "ATLASSIAN_API_TOKEN", "CONFLUENCE_TOKEN"], GENERIC,
                            ("Authorization: Bearer {}", "https://acme.atlassian.net/rest/api/3/myself"), True),
    "LINEAR_API_KEY": (lambda: "lin_api_" + rand(ALNUM, 40), ["LINEAR_API_KEY"], GENERIC,
                       ("Authorization: {}", "https://api.linear.app/graphql"), True),
    "NOTION_TOKEN": (notion_token, ["NOTION_TOKEN", "NOTION_API_KEY"], GENERIC,
                     ("Authorization: Bearer {}", "https://api.notion.com/v1/users"), True),
    "HEROKU_API_KEY": (heroku_key, ["HEROKU_API_KEY"],
                       ["env", "shell", "python", "javascript", "yaml", "json", "record", "chat", "ini"],
                       ("Authorization: Bearer {}", "https://api.heroku.com/apps"), False),
    "DIGITALOCEAN_TOKEN": (lambda: pick(["dop_v1_", "dop_v1_", "doo_v1_", "dor_v1_"]) + rand(HEX, 64),
                           ["DIGITALOCEAN_TOKEN", "DO_TOKEN"], GENERIC,
                           ("Authorization: Bearer {}", "https://api.digitalocean.com/v2/droplets"), True),
    "CLOUDFLARE_API_TOKEN": (lambda: rand(URLSAFE, 40), ["CLOUDFLARE_API_TOKEN", "CF_API_TOKEN"],
                             ["env", "shell", "python", "javascript", "yaml", "json", "record", "chat", "ini"],
                             ("Authorization: Bearer {}", "https://api.cloudflare.com/client/v4/user/tokens/verify"),
                             False),
    "VAULT_TOKEN": (vault_token, ["VAULT_TOKEN"], GENERIC,
                    ("X-Vault-Token: {}", "https://vault.internal.acme-corp.com:8200/v1/secret/data/app"), True),
    "DOPPLER_TOKEN": (lambda: pick(["dp.pt.", "dp.st.", "dp.ct."]) + rand(ALNUM, 43), ["DOPPLER_TOKEN"], GENERIC,
                      ("Authorization: Bearer {}", "https://api.doppler.com/v3/me"), True),
    "JWT": (jwt_token, ["ACCESS_TOKEN", "ID_TOKEN", "SESSION_JWT"], GENERIC,
            ("Authorization: Bearer {}", "https://api.acme-corp.com/v1/orders"), True),
    "PASSWORD_ASSIGNMENT": (password, ["DB_PASSWORD", "password", "passwd", "pwd", "SMTP_PASSWORD",
                                       "ADMIN_PASSWORD"],
                            ["env", "shell", "python", "javascript", "yaml", "json", "record", "ini"], None, False),
    "HIGH_ENTROPY_SECRET": (high_entropy, ["api_key", "client_secret", "auth_token", "INTERNAL_API_TOKEN",
                                           "WEBHOOK_SIGNING_SECRET", "secret_key", "SESSION_SECRET",
                                           "PARTNER_API_KEY"],
                            ["env", "shell", "python", "javascript", "yaml", "json", "record", "ini"], None, False),
}

LIVE_PER_TYPE = 40


def secret_rows(etype: str) -> list[dict]:
    gen, names, carriers, header, prefixed = SECRETS[etype]
    group = f"positive:{etype}"
    plan = list(carriers) + (["curl"] if header else []) + (["prose", "chat_inline"] if prefixed else [])
    out = []
    for i in range(LIVE_PER_TYPE):
        value = gen()
        carrier = plan[i % len(plan)]

        def write(t, v=value):
            t.v(v, etype)

        if carrier == "curl":
            out.append(curl(header[0], header[1], write, group))
        elif carrier == "prose":
            out.append(prose(write, group))
        elif carrier == "chat_inline":
            out.append(chat_inline(write, group))
        else:
            name = names[i % len(names)]
            if _is_camel(name) and carrier not in ("yaml", "json", "record"):
                name = names[0]  # documented CamelCase keys (AccountKey, SecretAccessKey) live in config files
            if name == "pwd" and carrier not in ("yaml", "json", "record", "ini"):
                name = "db_pwd"  # a bare PWD in a shell or .env is the working directory, not a password
            out.append(assignment(carrier, name, write, group))
    return out


def extra_rows() -> list[dict]:
    """Carriers that only some types have: .npmrc, .pypirc, .netrc, AWS credentials, gem credentials."""
    out = []
    for _ in range(4):
        t = Text().s("registry=https://registry.npmjs.org/\n//registry.npmjs.org/:_authToken=")
        t.v(crc_token("npm_"), "NPM_TOKEN")
        out.append(row(file_record(".npmrc"), "content", t.s("\nalways-auth=true\n"), "npmrc", "positive:NPM_TOKEN"))
    for _ in range(4):
        t = Text().s("[distutils]\nindex-servers =\n    pypi\n\n[pypi]\n  username = __token__\n  password = ")
        t.v(pypi_token(), "PYPI_TOKEN")
        out.append(row(file_record(".pypirc"), "content", t.s("\n"), "pypirc", "positive:PYPI_TOKEN"))
    for _ in range(4):
        t = Text().s("machine api.heroku.com\n  login ops-deploy\n  password ")
        t.v(heroku_key(), "HEROKU_API_KEY")
        t.s("\nmachine git.heroku.com\n  login ops-deploy\n  password ")
        t.v(heroku_key(), "HEROKU_API_KEY")
        out.append(row(file_record(".netrc"), "content", t.s("\n"), "netrc", "positive:HEROKU_API_KEY"))
    for _ in range(4):
        t = Text().s("---\n:rubygems_api_key: ")
        t.v("rubygems_" + rand(HEX, 48), "RUBYGEMS_API_KEY")
        out.append(row(file_record(".gem/credentials"), "content", t.s("\n"), "gem_credentials",
                       "positive:RUBYGEMS_API_KEY"))
    for i in range(12):  # AWS shared credentials file (access key id + secret [+ session token])
        t = Text().s(f"[{pick(['default', 'prod', 'ci'])}]\naws_access_key_id = ")
        if i == 0:
            t.v("AKIAIOSFODNN7EXAMPLE", "AWS_ACCESS_KEY_ID", placeholder=True)
            t.s("\naws_secret_access_key = ")
            t.v("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "AWS_SECRET_ACCESS_KEY", placeholder=True)
        else:
            t.v(aws_key_id(), "AWS_ACCESS_KEY_ID")
            t.s("\naws_secret_access_key = ")
            t.v(aws_secret(), "AWS_SECRET_ACCESS_KEY")
            if i % 3 == 0:
                t.s("\naws_session_token = ")
                t.v(aws_session(), "AWS_SESSION_TOKEN")
        t.s(f"\nregion = {pick(['us-east-1', 'eu-west-1', 'ap-south-1'])}\n")
        out.append(row(file_record(".aws/credentials"), "content", t, "aws_credentials",
                       "positive:AWS_SECRET_ACCESS_KEY"))
    for _ in range(3):  # documented AWS example keys in prose: placeholders (the secret only as an assignment)
        t = Text().s("The AWS docs use ")
        t.v("AKIAIOSFODNN7EXAMPLE", "AWS_ACCESS_KEY_ID", placeholder=True)
        t.s(" as the sample key id and aws_secret_access_key=")
        t.v("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "AWS_SECRET_ACCESS_KEY", placeholder=True)
        out.append(row({"text": None}, "text", t.s(" as the sample secret; never use them for real."), "prose",
                       "positive:AWS_ACCESS_KEY_ID"))
    for i in range(3):  # Stripe's documented example key
        write = lambda t: t.v("sk_test_4eC39HqLyjWDarjtT1zdp7dc", "STRIPE_KEY", placeholder=True)  # noqa: E731
        out.append(assignment(["env", "python", "javascript"][i], "STRIPE_SECRET_KEY", write, "positive:STRIPE_KEY"))
    for i in range(3):  # provider-shaped values with documented example markers
        value = "ghp_" + "x" * 36 if i == 0 else ("sk_live_" + "x" * 24 if i == 1 else "AKIA" + "X" * 9 + "EXAMPLE")
        etype = ["GITHUB_TOKEN", "STRIPE_KEY", "AWS_ACCESS_KEY_ID"][i]
        out.append(assignment("env", ["GITHUB_TOKEN", "STRIPE_SECRET_KEY", "AWS_ACCESS_KEY_ID"][i],
                              lambda t, v=value, e=etype: t.v(v, e, placeholder=True), f"positive:{etype}"))
    return out


def azure_rows() -> list[dict]:
    out = []
    carriers = ["env", "json", "python", "yaml", "chat", "record", "shell"]
    for i in range(40):  # connection strings
        account = pick(SERVICES) + "store" + str(rng.randint(1, 99))

        def write(t, account=account):
            t.s(f"DefaultEndpointsProtocol=https;AccountName={account};AccountKey=")
            t.v(azure_storage_key(), "AZURE_CONNECTION_STRING")
            t.s(";EndpointSuffix=core.windows.net")

        carrier = carriers[i % len(carriers)]
        if carrier == "chat":
            out.append(chat_inline(write, "positive:AZURE_CONNECTION_STRING"))
        else:
            out.append(assignment(carrier, "AZURE_STORAGE_CONNECTION_STRING", write,
                                  "positive:AZURE_CONNECTION_STRING"))
    for i in range(40):  # SAS URLs
        account = pick(SERVICES) + "data" + str(rng.randint(1, 99))
        start = f"2026-{rng.randint(1, 9):02d}-{rng.randint(10, 28):02d}"
        end = f"2027-{rng.randint(1, 9):02d}-{rng.randint(10, 28):02d}"

        def write(t, account=account, start=start, end=end):
            t.s(f"https://{account}.blob.core.windows.net/exports/report.csv?sv=2022-11-02&ss=b&srt=co&sp=rl"
                f"&st={start}T08%3A00%3A00Z&se={end}T08%3A00%3A00Z&spr=https&sig=")
            t.v(azure_sig(), "AZURE_SAS_TOKEN")

        carrier = ["env", "curl", "log", "python", "chat", "yaml"][i % 6]
        if carrier == "curl":
            t = Text().s("curl -sS -o report.csv \"")
            write(t)
            out.append(row({"text": None}, "text", t.s("\""), "curl", "positive:AZURE_SAS_TOKEN"))
        elif carrier == "log":
            t = Text().s("[export] INFO uploaded to ")
            write(t)
            out.append(row({"source": "app-log", "text": None}, "text", t, "log", "positive:AZURE_SAS_TOKEN"))
        elif carrier == "chat":
            out.append(chat_inline(write, "positive:AZURE_SAS_TOKEN"))
        else:
            out.append(assignment(carrier, "EXPORT_SAS_URL", write, "positive:AZURE_SAS_TOKEN"))
    return out


def twilio_rows() -> list[dict]:
    out = []
    for i in range(10):  # auth tokens, assigned; the Account SID is an identifier and stays unlabelled
        t = Text().s(f"TWILIO_ACCOUNT_SID=AC{rand(HEX, 32)}\nTWILIO_AUTH_TOKEN=")
        t.v(rand(HEX, 32), "TWILIO_TOKEN")
        out.append(row(file_record(".env"), "content", t.s("\n"), "env", "positive:TWILIO_TOKEN"))
    return out


def datadog_rows() -> list[dict]:
    out = []
    carriers = ["env", "shell", "yaml", "json", "record", "python", "chat", "curl"]
    for i in range(40):
        api = i % 2 == 0
        value = rand(HEX, 32 if api else 40)
        carrier = carriers[i % len(carriers)]
        write = lambda t, v=value: t.v(v, "DATADOG_KEY")  # noqa: E731
        if carrier == "curl":
            header = "DD-API-KEY: {}" if api else "DD-APPLICATION-KEY: {}"
            out.append(curl(header, "https://api.datadoghq.com/api/v1/validate", write, "positive:DATADOG_KEY"))
        else:
            out.append(assignment(carrier, "DD_API_KEY" if api else "DD_APP_KEY", write, "positive:DATADOG_KEY"))
    return out


def private_key_rows() -> list[dict]:
    out = []
    for i in range(40):
        kind = i % len(PEM_KINDS)
        block = pem_block(kind)
        style = i % 5
        if style == 0:
            t = Text().v(block, "PRIVATE_KEY")
            out.append(row(file_record(f"deploy/id_{i}.pem"), "content", t.s("\n"), "pem_file",
                           "positive:PRIVATE_KEY"))
        elif style == 1:  # YAML literal block: indented lines
            t = Text().s("tls:\n  enabled: true\n  key: |\n    ")
            t.v(block.replace("\n", "\n    "), "PRIVATE_KEY")
            out.append(row(file_record("helm/values.yaml"), "content", t.s("\n"), "yaml", "positive:PRIVATE_KEY"))
        elif style == 2:  # service-account style JSON text with \n escapes
            t = Text().s("{\n  \"type\": \"service_account\",\n  \"project_id\": \"acme-prod\",\n  \"private_key\": \"")
            t.v(block.replace("\n", "\\n") + "\\n", "PRIVATE_KEY")
            out.append(row(file_record("sa.json"), "content", t.s("\"\n}\n"), "json", "positive:PRIVATE_KEY"))
        elif style == 3:
            rec = chat_record()
            t = Text().s("ssh refuses this key, what is wrong with it?\n\n")
            t.v(block, "PRIVATE_KEY")
            out.append(row(rec, "messages[1].content", t, "chat", "positive:PRIVATE_KEY"))
        else:
            t = Text().s("KEY = \"\"\"")
            t.v(block, "PRIVATE_KEY")
            out.append(row(file_record("signer.py"), "content", t.s("\"\"\"\n"), "python", "positive:PRIVATE_KEY"))
    return out


def k8s_rows() -> list[dict]:
    out = []
    keys = ["password", "api-token", "db-password", "client-secret", "tls.key", "token", "redis-password"]
    for i in range(22):
        entries = [(pick(keys), b64(pick([password().encode(), rng.randbytes(rng.choice([24, 32, 48]))])))
                   for _ in range(rng.randint(1, 3))]
        entries = list(dict(entries).items())
        name = pick(SERVICES) + "-credentials"
        style = i % 3
        if style in (0, 1):
            t = Text().s(f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: prod\ntype: Opaque\ndata:\n")
            for key, value in entries:
                t.s(f"  {key}: ")
                t.v(value, "KUBERNETES_SECRET")
                t.s("\n")
            if style == 0:
                out.append(row(file_record(f"k8s/{name}.yaml"), "content", t, "k8s_yaml", "positive:KUBERNETES_SECRET"))
            else:
                rec = chat_record()
                body = t.str()
                t2 = Text().s("kubectl apply rejects this manifest:\n\n")
                offset = t2.n
                t2.s(body)
                t2.labels = [{**lab, "start": lab["start"] + offset, "end": lab["end"] + offset} for lab in t.labels]
                out.append(row(rec, "messages[1].content", t2, "chat", "positive:KUBERNETES_SECRET"))
        else:
            t = Text().s(f"{{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"Secret\",\n  \"metadata\": {{\"name\": \"{name}\"}},\n"
                         f"  \"type\": \"Opaque\",\n  \"data\": {{")
            for j, (key, value) in enumerate(entries):
                t.s(("," if j else "") + f"\n    \"{key}\": \"")
                t.v(value, "KUBERNETES_SECRET")
                t.s("\"")
            t.s("\n  }\n}\n")
            out.append(row(file_record(f"k8s/{name}.json"), "content", t, "k8s_json", "positive:KUBERNETES_SECRET"))
    return out


def jwt_rows() -> list[dict]:
    out = secret_rows("JWT")
    if _jwt_io_is_what_jwt_io_says():
        for carrier in ("prose", "chat_inline", "python"):
            write = lambda t: t.v(JWT_IO_EXAMPLE, "JWT", placeholder=True)  # noqa: E731
            if carrier == "prose":
                out.append(prose(write, "positive:JWT"))
            elif carrier == "chat_inline":
                out.append(chat_inline(write, "positive:JWT"))
            else:
                out.append(assignment("python", "SAMPLE_TOKEN", write, "positive:JWT"))
    return out


# -- negatives -----------------------------------------------------------------------------------------
def neg(text: str, carrier: str, cls: str, record_key: str = "text", regions=None) -> dict:
    t = Text().s(text)
    rec = {record_key: None} if record_key == "text" else file_record(record_key)
    return row(rec, "text" if record_key == "text" else "content", t, carrier, f"negative:{cls}", regions)


def neg_chat(text: str, cls: str) -> dict:
    rec = chat_record()
    return row(rec, "messages[1].content", Text().s(text), "chat", f"negative:{cls}")


def negatives() -> list[dict]:
    out: list[dict] = []
    N = 20

    for i in range(N):
        u = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        text = pick([f"request_id={u} status=200 duration_ms={rng.randint(3, 900)}",
                     f"Order {u} was shipped.", f"\"trace_id\": \"{u}\""])
        out.append(neg(text, ["log", "prose", "json"][i % 3], "uuid"))
    for i in range(N):
        sha = rand(HEX, 40)
        text = pick([f"commit {sha}\nAuthor: build bot\n\n    Bump dependencies", f"Merge {sha[:12]} into main",
                     f"This reverts commit {sha}."])
        out.append(neg(text, ["git_log", "prose"][i % 2], "git_sha"))
    for i in range(N):
        digest = hashlib.sha256(rng.randbytes(16)).hexdigest()
        text = pick([f"{digest}  {pick(SERVICES)}-1.4.2.tar.gz", f"image: ghcr.io/acme/{pick(SERVICES)}@sha256:{digest}",
                     f"SHA256 checksum of the installer: {digest}"])
        out.append(neg(text, ["checksums", "yaml", "prose"][i % 3], "sha256"))
    for i in range(N):
        sri = "sha512-" + b64(hashlib.sha512(rng.randbytes(16)).digest())
        etag = hashlib.md5(rng.randbytes(8)).hexdigest()
        text = pick([f"\"node_modules/{pick(SERVICES)}\": {{\n  \"version\": \"2.1.0\",\n  \"integrity\": \"{sri}\"\n}}",
                     f"ETag: \"{etag}\"", f"<script src=\"/app.js\" integrity=\"{sri}\" crossorigin=\"anonymous\"></script>"])
        out.append(neg(text, ["json", "http", "html"][i % 3], "integrity_hash"))
    sentences = ["The quick brown fox jumps over the lazy dog.", "Meeting notes for the quarterly planning session.",
                 "Please find the attached report on regional sales.", "Thank you for your order, it ships tomorrow.",
                 "All systems are operating normally this morning."]
    for i in range(N):
        encoded = b64((pick(sentences) + " " + pick(sentences)).encode())
        text = pick([f"Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n{encoded}",
                     f"data:text/plain;base64,{encoded}", f"\"body\": \"{encoded}\""])
        out.append(neg(text, ["mime", "html", "json"][i % 3], "base64_prose"))
    for i in range(N):
        if i % 2:
            v = f"{rng.randint(1, 12)}.{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 200)}"
        else:
            v = f"10.0.{rng.randint(10000, 26000)}.{rng.randint(1000, 5000)}"
        text = pick([f"Product version {v} is installed.", f"[assembly: AssemblyVersion(\"{v}\")] // version {v}",
                     f"version: {v}"])
        out.append(neg(text, ["prose", "csharp", "yaml"][i % 3], "version_string"))
    for i in range(N):
        body = pick(["978", "979"]) + rand(string.digits, 9)
        check = (10 - sum(int(d) * (1 if k % 2 == 0 else 3) for k, d in enumerate(body)) % 10) % 10
        isbn = body + str(check)
        text = pick([f"ISBN {isbn[:3]}-{isbn[3]}-{isbn[4:8]}-{isbn[8:12]}-{isbn[12]}", f"ISBN-13: {isbn}",
                     f"Cite as: ISBN {isbn}."])
        out.append(neg(text, ["prose", "bibliography"][i % 2], "isbn13"))
    for i in range(N):
        good = iban()
        wrong = (int(good[2:4]) + rng.randint(1, 96)) % 97
        bad = good[:2] + f"{wrong:02d}" + good[4:]
        if iban_mod97_ok(bad):
            bad = good[:2] + f"{(wrong + 1) % 97:02d}" + good[4:]
        assert not iban_mod97_ok(bad)
        text = pick([f"Order reference {bad} received.", f"\"reference\": \"{bad}\"", f"ref={bad} state=queued"])
        out.append(neg(text, ["prose", "json", "log"][i % 3], "iban_bad_checksum"))
    for i in range(N):
        y, mo, d = rng.randint(2019, 2027), rng.randint(1, 12), rng.randint(1, 28)
        h, mi, s = rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59)
        text = pick([f"{y}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}Z job finished",
                     f"created_at: {y}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}",
                     f"Date: {d:02d} Mar {y} {h:02d}:{mi:02d}:{s:02d} +0000",
                     f"\"ts\": {rng.randint(1_600_000_000, 1_800_000_000)}",
                     f"\"ts_ms\": {rng.randint(1_600_000_000_000, 1_800_000_000_000)}",
                     f"backup-{y}{mo:02d}{d:02d}{h:02d}{mi:02d}{s:02d}.tar.gz"])
        out.append(neg(text, ["log", "yaml", "email_header", "json"][i % 4], "dates_timestamps"))
    for i in range(N):
        while True:
            number = card_number(pick(["4", "51", "52", "53", "54", "55"]), 16)
            number = number[:-1] + str((int(number[-1]) + rng.randint(1, 9)) % 10)
            if not luhn_ok(number):
                break
        text = pick([f"card {number[:4]} {number[4:8]} {number[8:12]} {number[12:]}", f"ref no. {number}",
                     f"\"account\": \"{number}\""])
        out.append(neg(text, ["prose", "log", "json"][i % 3], "luhn_fail_16"))
    for i in range(N):
        number = card_number(pick(["0", "7", "1", "31", "32", "33"]), 16)
        text = pick([f"Loyalty card {number}", f"member_no={number}", f"Fuel card number: {number}"])
        out.append(neg(text, ["prose", "log", "prose"][i % 3], "card_outside_iin"))
    for i in range(N):
        area = pick(["000", "666", str(rng.randint(900, 999))])
        group, serial = f"{rng.randint(1, 99):02d}", f"{rng.randint(1, 9999):04d}"
        kind = i % 3
        if kind == 1:
            area, group = f"{rng.randint(1, 665):03d}", "00"
        elif kind == 2:
            area, serial = f"{rng.randint(1, 665):03d}", "0000"
        value = f"{area}-{group}-{serial}"
        text = pick([f"SSN: {value} (rejected: never issued)", f"\"ssn\": \"{value}\"", f"social security number {value}"])
        out.append(neg(text, ["form", "json", "prose"][i % 3], "ssn_invalid"))
    bad_ips = ["256.{}.{}.{}", "{}.{}.{}", "::ffff:256.{}.{}.{}", "300.{}.{}.{}", "{}.{}.{}.999", "2001:db8::1::{}",
               "fe80:::{}", "gggg::{}", "12345::{}", "{}.{}.{}.{}.{}"]
    for i in range(N):
        pattern = bad_ips[i % len(bad_ips)]
        if pattern == "{}.{}.{}.{}.{}":
            pattern = "{}.{}.{}.256.{}"
        value = pattern.format(*[rng.randint(1, 200) for _ in range(pattern.count("{}"))])
        text = pick([f"invalid address {value} rejected by parser", f"listen: {value}", f"bad peer {value}"])
        out.append(neg(text, ["log", "yaml", "log"][i % 3], "ip_invalid"))
    non_emails = ["Thanks @{h} for the review!", "@pytest.mark.parametrize(\"n\", [1, 2])", "@media screen and (max-width: 600px)",
                  "npm install lodash@4.17.21", "pnpm add @types/node@20.11.5", "pip install requests==2.31.0 @ latest",
                  "ping @{h} and @{h2} about the release", "user@ (missing domain)", "@{h}: see the thread",
                  "yarn add react@18.2.0 react-dom@18.2.0"]
    for i in range(N):
        text = non_emails[i % len(non_emails)].format(h=pick(FIRST) + str(rng.randint(1, 99)), h2=pick(LAST))
        out.append(neg(text, ["prose", "python", "css", "shell", "shell", "shell", "chat", "prose", "prose", "shell"][i % 10],
                       "non_email"))
    placeholders = ["API_KEY=xxxx", "GITHUB_TOKEN=<your-token>", "OPENAI_API_KEY=${OPENAI_API_KEY}",
                    "token = os.environ[\"SLACK_BOT_TOKEN\"]", "password: changeme", "const key = process.env.STRIPE_SECRET_KEY;",
                    "token: ${{ secrets.NPM_TOKEN }}", "DB_PASSWORD=********", "api_key = \"YOUR_API_KEY_HERE\"",
                    "aws_secret_access_key = <redacted>", "AZURE_CLIENT_SECRET=\"<client-secret>\"",
                    "password = getpass.getpass()", "SENDGRID_API_KEY=your_sendgrid_api_key",
                    "client_secret: \"{{ vault_client_secret }}\"", "HF_TOKEN=hf_xxxxxxxxxxxxxxxx"]
    for i in range(N + 5):
        text = placeholders[i % len(placeholders)]
        out.append(neg(text, ["env", "env", "env", "python", "yaml", "javascript", "yaml", "env", "python", "ini",
                              "env", "python", "env", "yaml", "env"][i % 15], "placeholder_values", record_key=".env"
                       if i % 2 else "text"))
    for i in range(N):
        prefix = pick(["ghp_", "gho_", "ghs_", "npm_"])
        body = rand(B62, 30)
        good = base62(zlib.crc32(body.encode()), 6)
        bad = good
        while bad == good:
            bad = rand(B62, 6)
        text = f"GITHUB_TOKEN={prefix}{body}{bad}" if prefix != "npm_" else f"//registry.npmjs.org/:_authToken={prefix}{body}{bad}"
        out.append(neg(text, ["env", "npmrc"][prefix == "npm_"], "github_bad_crc"))
    wrong_shapes = [lambda: "AKIA" + rand(BASE32_UPPER, 15), lambda: "AKIA" + rand("01890189", 4) + rand(BASE32_UPPER, 12),
                    lambda: "dop_v1_" + rand(HEX, 63), lambda: "shpat_" + rand(HEX, 31), lambda: "rubygems_" + rand(HEX, 47),
                    lambda: "dapi" + rand(HEX, 31), lambda: "glpat-" + rand(ALNUM, 12),
                    lambda: "github_pat_" + rand(B62, 10) + "_" + rand(B62, 20), lambda: "sk-ant-api03-" + rand(ALNUM, 12),
                    lambda: "AKIA" + rand(BASE32_UPPER, 17)]
    for i in range(N):
        value = wrong_shapes[i % len(wrong_shapes)]()
        text = pick([f"rejected malformed credential {value} (bad length)", f"# example of an invalid key: {value}"])
        out.append(neg(text, ["log", "prose"][i % 2], "provider_wrong_shape"))
    for i in range(N):
        text = pick([f"We rotated the auth token yesterday; the commit that did it was {rand(HEX, 40)}.",
                     f"The token bucket refill logic landed in build {rand(HEX, 12)} last week.",
                     f"Secret scanning flagged nothing; the checksum of the release was {hashlib.sha256(rng.randbytes(8)).hexdigest()}.",
                     f"Key rotation is documented in ticket OPS-{rng.randint(100, 9999)}, see commit {rand(HEX, 7)}."])
        out.append(neg(text, "prose", "token_word_prose") if i % 2 else neg_chat(text, "token_word_prose"))
    for i in range(N):
        kind = i % 3
        if kind == 0:
            body = b64(bytes.fromhex("30820122300d06092a864886f70d01010105000382010f00") + rng.randbytes(270))
            text = "-----BEGIN PUBLIC KEY-----\n" + "\n".join(body[j:j + 64] for j in range(0, len(body), 64)) + "\n-----END PUBLIC KEY-----"
        elif kind == 1:
            body = b64(bytes.fromhex("308203") + rng.randbytes(700))
            text = "-----BEGIN CERTIFICATE-----\n" + "\n".join(body[j:j + 64] for j in range(0, len(body), 64)) + "\n-----END CERTIFICATE-----"
        else:
            text = "ssh-ed25519 " + b64(b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + rng.randbytes(32))
        out.append(neg(text, ["pem_file", "pem_file", "authorized_keys"][kind], "public_key_material"))
    for i in range(N):
        kind = i % 5
        if kind == 0:
            value = f"+1 {rng.choice('01')}{rng.randint(10, 99)} {rng.randint(200, 999)} {rng.randint(1000, 9999)}"
        elif kind == 1:
            value = f"({rng.choice('01')}{rng.randint(10, 99)}) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}"
        elif kind == 2:
            value = f"Order #{rng.randint(10 ** 8, 10 ** 9 - 1)}"
        elif kind == 3:
            value = f"ZIP {rng.randint(10000, 99999)}-{rng.randint(1000, 9999)}"
        else:
            value = f"+44 20 {rng.randint(100, 999)} {rng.randint(10, 99)}"
        if kind in (0, 1, 4):
            try:
                parsed = phonenumbers.parse(value, "US")
                assert not phonenumbers.is_valid_number(parsed), value
            except phonenumbers.NumberParseException:
                pass
        out.append(neg(f"{value} — please check the record.", "prose", "invalid_phone", regions=["US"]))
    for i in range(N):
        dsn = f"https://{rand(HEX, 32)}@o{rng.randint(100000, 999999)}.ingest.sentry.io/{rng.randint(1000000, 9999999)}"
        text = pick([f"SENTRY_DSN={dsn}", f"Sentry.init({{ dsn: \"{dsn}\" }});", f"sentry_sdk.init(dsn=\"{dsn}\")"])
        out.append(neg(text, ["env", "javascript", "python"][i % 3], "sentry_dsn"))
    return out


# -- assembly --------------------------------------------------------------------------------------------
def generate() -> list[dict]:
    """Every row, in a fixed order, from one seeded generator."""
    global rng
    rng = random.Random(SEED)
    rows: list[dict] = []
    rows += gen_email() + gen_phone() + gen_card() + gen_ssn() + gen_iban() + gen_ip() + gen_url_credentials()
    for etype in SECRETS:
        if etype == "DATADOG_KEY":
            rows += datadog_rows()
        elif etype == "JWT":
            rows += jwt_rows()
        else:
            rows += secret_rows(etype)
    rows += extra_rows() + azure_rows() + twilio_rows() + private_key_rows() + k8s_rows()
    rows += negatives()
    return rows


def render(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)


def main(argv: list[str]) -> int:
    text = render(generate())
    if "--check" in argv:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else None
        if current != text:
            print(f"{OUTPUT} is stale: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    tmp = OUTPUT.with_suffix(".jsonl.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, OUTPUT)
    print(f"wrote {OUTPUT} ({text.count(chr(10))} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
