"""A corpus of secret formats as they show up in pod logs, Kubernetes events and Sentry payloads.

Each entry: (format, line, secret). `secret` is the part that must never appear anywhere we publish.
Values are fake but shaped like the real thing (prefixes, lengths, alphabets), so provider-specific
rules are exercised, not only the generic `key=value` rule. Secrets are unique strings, so a leak is
found with a plain substring search.
"""

from __future__ import annotations

PEM_RSA = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAzRsaPemLeakCanary0001abcdefghijklmnopqrstuvwxyz\n"
           "q0Zk7Yd2RsaPemSecondLine0001+/==\n-----END RSA PRIVATE KEY-----")
PEM_OPENSSH = ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUOpensshCanary0002xyz\n"
               "-----END OPENSSH PRIVATE KEY-----")
PEM_EC_TRUNCATED = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIEcTruncatedCanary0003VWM9nuwNSk3yByxZpYRTBnVJ"
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJqd3QtY2FuYXJ5LTAwMDQifQ."
       "JwtSignatureCanary0004SflKxwRJSMeKKF2QT4fwpMeJf36P")
SA_TOKEN = ("eyJhbGciOiJSUzI1NiIsImtpZCI6IlNhQ2FuYXJ5MDAwNSJ9.eyJpc3MiOiJrdWJlcm5ldGVzL3NlcnZpY2VhY2NvdW50In0."
            "SaTokenSignatureCanary0005abcdefghijklmnopqrstuvwxyz0123456789")

CORPUS: list[tuple[str, str, str]] = [
    ("aws_access_key_id", "boto: using AKIAZCANARY0006EXAMP as access key", "AKIAZCANARY0006EXAMP"),
    ("aws_sts_key_id", "assumed role creds ASIAZCANARY0007ABCDE", "ASIAZCANARY0007ABCDE"),
    ("aws_secret_access_key", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYCanary0008", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYCanary0008"),
    ("aws_session_token", "AWS_SESSION_TOKEN=IQoJb3JpZ2luX2VjSessionCanary0009abcdefgh", "IQoJb3JpZ2luX2VjSessionCanary0009abcdefgh"),
    ("gcp_api_key", "maps client key=AIzaSyCanary0010aGmWKa4JsXZ-HjGw7ISLn_3", "AIzaSyCanary0010aGmWKa4JsXZ-HjGw7ISLn_3"),
    ("gcp_oauth_token", "gcloud access ya29.a0AfH6SMCanary0011kQ_abcdefghijklmnop", "ya29.a0AfH6SMCanary0011kQ_abcdefghijklmnop"),
    ("gcp_service_account", '{"type": "service_account", "private_key_id": "GcpKeyIdCanary0012f1c2d3e4f5a6b7c8d9e0f"}', "GcpKeyIdCanary0012f1c2d3e4f5a6b7c8d9e0f"),
    ("azure_storage_connection_string",
     "DefaultEndpointsProtocol=https;AccountName=shop;AccountKey=AzureKeyCanary0013Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUz==;EndpointSuffix=core.windows.net",
     "AzureKeyCanary0013Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUz=="),
    ("azure_sas_token", "GET https://shop.blob.core.windows.net/c/b?sv=2022-11-02&sp=r&sig=AzureSasCanary0014xqZ8%2BabcDEF%3D failed",
     "AzureSasCanary0014xqZ8%2BabcDEF%3D"),
    ("azure_client_secret", "msal: client credential abc8Q~AzureClientCanary0015abcdefghijk rejected", "abc8Q~AzureClientCanary0015abcdefghijk"),
    ("github_pat_classic", "git clone failed with ghp_GithubCanary0016C7e42F292c6912E7710c8", "ghp_GithubCanary0016C7e42F292c6912E7710c8"),
    ("github_pat_fine_grained", "token github_pat_11GithubFineCanary0017_abcdefghijklmnopqrstuvwxyzABCD used",
     "github_pat_11GithubFineCanary0017_abcdefghijklmnopqrstuvwxyzABCD"),
    ("gitlab_pat", "GITLAB glpat-GitlabCanary0018xxxxx1234 expired", "glpat-GitlabCanary0018xxxxx1234"),
    ("gitlab_runner_token", "runner registered with glrt-GitlabRunnerCanary0019abcdefgh", "glrt-GitlabRunnerCanary0019abcdefgh"),
    ("slack_bot_token", "slack: invalid_auth for xoxb-1234567890-0987654321-SlackCanary0020AbCd", "xoxb-1234567890-0987654321-SlackCanary0020AbCd"),
    ("slack_app_token", "socket mode xapp-1-A0SLACKAPP-1234567890-SlackAppCanary0021abcdef0123", "xapp-1-A0SLACKAPP-1234567890-SlackAppCanary0021abcdef0123"),
    ("slack_webhook", "POST https://hooks.slack.com/services/T00000000/B00000000/SlackHookCanary0022XXXX -> 404",
     "T00000000/B00000000/SlackHookCanary0022XXXX"),
    ("stripe_secret_key", "stripe.error.AuthenticationError: sk_live_StripeCanary0023jWDarjtT1zdp7dc", "sk_live_StripeCanary0023jWDarjtT1zdp7dc"),
    ("stripe_webhook_secret", "verifying with whsec_StripeHookCanary0024abcdefgh", "whsec_StripeHookCanary0024abcdefgh"),
    ("sentry_dsn", "sentry init dsn=https://e3a1b2c4d5e6f708192a3b4c5d6e0025@o123456.ingest.sentry.io/42", "e3a1b2c4d5e6f708192a3b4c5d6e0025"),
    ("sentry_auth_token", "sentry-cli using sntrys_eyJpYXQiOjE3MDAwMDAwMDB9SentryOrgCanary0026_abcdefghijklmnop",
     "sntrys_eyJpYXQiOjE3MDAwMDAwMDB9SentryOrgCanary0026_abcdefghijklmnop"),
    ("sentry_user_token", "auth header token sntryu_SentryUserCanary0027abcdef0123456789abcdef0123456789abcdef",
     "sntryu_SentryUserCanary0027abcdef0123456789abcdef0123456789abcdef"),
    ("openai_key", "openai.AuthenticationError: Incorrect API key provided: sk-proj-OpenaiCanary0028abcdefghijklmnopqrstu",
     "sk-proj-OpenaiCanary0028abcdefghijklmnopqrstu"),
    ("anthropic_key", "client init sk-ant-api03-AnthropicCanary0029abcdefghijklmnopqrstuvwxyz", "sk-ant-api03-AnthropicCanary0029abcdefghijklmnopqrstuvwxyz"),
    ("huggingface_token", "hub login hf_HuggingCanary0030abcdefghijklmnopqrs", "hf_HuggingCanary0030abcdefghijklmnopqrs"),
    ("sendgrid_key", "mail SG.SendgridCanary0031QlKU0ufo8x.TwL2iGABf9DHoTf-09kqeF8tAmbihYzrnop", "SG.SendgridCanary0031QlKU0ufo8x.TwL2iGABf9DHoTf-09kqeF8tAmbihYzrnop"),
    ("npm_token", "//registry.npmjs.org/:_authToken=npm_NpmCanary0032abcdefghijklmnopqrstuvwx", "npm_NpmCanary0032abcdefghijklmnopqrstuvwx"),
    ("vault_token", "vault: permission denied for hvs.VaultCanary0033CAESIJabcdefghijklmnopqrst", "hvs.VaultCanary0033CAESIJabcdefghijklmnopqrst"),
    ("databricks_token", "databricks host=x token dapi0034dbc0ffee1234567890abcdef0123", "dapi0034dbc0ffee1234567890abcdef0123"),
    ("postgres_url_password", "connecting to postgres://checkout:PgUrlCanary0035@db.shop:5432/orders", "PgUrlCanary0035"),
    ("mongodb_srv_password", "MongoNetworkError mongodb+srv://app:MongoCanary0036@cluster0.x.mongodb.net/db", "MongoCanary0036"),
    ("redis_url_password", "redis url=redis://:RedisCanary0037@cache:6379/0", "RedisCanary0037"),
    ("sqlserver_connection_string", "Server=tcp:db,1433;Database=orders;User Id=sa;Password=MssqlCanary0038;Encrypt=true", "MssqlCanary0038"),
    ("odbc_pwd", "DRIVER={PostgreSQL};SERVER=db;UID=app;PWD=OdbcCanary0039;", "OdbcCanary0039"),
    ("jdbc_password_param", "jdbc:mysql://db:3306/orders?user=app&password=JdbcCanary0040&ssl=true", "JdbcCanary0040"),
    ("password_env", "DB_PASSWORD=EnvPwCanary0041", "EnvPwCanary0041"),
    ("password_json", '{"user": "bob", "password": "Json Pw Canary 0042"}', "Json Pw Canary 0042"),
    ("password_flag", "psql --password CliPwCanary0043 --host db", "CliPwCanary0043"),
    ("passphrase", "gpg: passphrase=PassphraseCanary0044 rejected", "PassphraseCanary0044"),
    ("bearer_header", "GET /api Authorization: Bearer BearerCanary0045abcDEF123456", "BearerCanary0045abcDEF123456"),
    ("basic_auth_header", "curl -H 'Authorization: Basic QmFzaWNDYW5hcnkwMDQ2OnB3' http://x", "QmFzaWNDYW5hcnkwMDQ2OnB3"),
    ("cookie_header", "request headers: Cookie: sessionid=CookieCanary0047abcdef; csrftoken=CsrfCanary0047xyz", "CookieCanary0047abcdef"),
    ("docker_config_auth", '{"auths": {"registry.example": {"auth": "ZG9ja2VyOkRvY2tlckNhbmFyeTAwNDg="}}}', "ZG9ja2VyOkRvY2tlckNhbmFyeTAwNDg="),
    ("jwt", f"session jwt {JWT}", "JwtSignatureCanary0004SflKxwRJSMeKKF2QT4fwpMeJf36P"),
    ("k8s_service_account_token", f"mounted token: {SA_TOKEN}", "SaTokenSignatureCanary0005abcdefghijklmnopqrstuvwxyz0123456789"),
    ("pem_rsa_private_key", f"loaded key:\n{PEM_RSA}\nstarting", "RsaPemSecondLine0001"),
    ("pem_openssh_private_key", f"id_ed25519:\n{PEM_OPENSSH}", "OpensshCanary0002xyz"),
    ("pem_truncated_ec_key", f"tail: {PEM_EC_TRUNCATED}", "EcTruncatedCanary0003VWM9nuwNSk3yByxZpYRTBnVJ"),
    ("pem_base64_in_secret", "tls.key: LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCk1JSUV2Z0lCQURBTkJna3Foa2lHOXcwQkFRRUZB" + "QmFzZTY0UGVtQ2FuYXJ5MDA0OQ==",
     "QmFzZTY0UGVtQ2FuYXJ5MDA0OQ=="),
    ("twilio_api_key", "twilio SK0050abcdef0123456789abcdef012345 invalid", "SK0050abcdef0123456789abcdef012345"),
    ("datadog_api_key", "DD_API_KEY=0051datadogcanary0123456789abcdef", "0051datadogcanary0123456789abcdef"),
    ("telegram_bot_token", "telegram: sending via bot 123456789:AAH-TelegramCanary0052abcdefghijklmnop", "AAH-TelegramCanary0052abcdefghijklmnop"),
    ("discord_webhook", "discord https://discord.com/api/webhooks/1234567890/DiscordCanary0053abcdefghijklmnop", "DiscordCanary0053abcdefghijklmnop"),
]

FORMATS = sorted({name for name, _, _ in CORPUS})
SECRETS = [secret for _, _, secret in CORPUS]
