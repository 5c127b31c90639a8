"""The local model catalog: GGUF files in the data directory's models folder."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.db import models
from django.template.defaultfilters import filesizeformat


class LocalModel(models.Model):
    class Source(models.TextChoices):
        BUNDLED = "bundled", "Bundled with Sovereign"
        PATH = "path", "Added from a file"
        URL = "url", "Downloaded"

    name = models.SlugField(max_length=100, unique=True)  # what API clients ask for
    file_name = models.CharField(max_length=255, unique=True)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    architecture = models.CharField(max_length=50)
    parameters = models.BigIntegerField()
    quantization = models.CharField(max_length=20)
    context_length = models.PositiveIntegerField(null=True, blank=True)
    chat_template = models.TextField(blank=True)
    source = models.CharField(max_length=10, choices=Source.choices)
    added_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name

    @property
    def path(self) -> Path:
        return Path(settings.DATA_DIR) / "models" / self.file_name

    @property
    def parameters_label(self) -> str:
        for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
            if self.parameters >= size:
                return f"{self.parameters / size:.1f}{unit}".replace(".0", "")
        return str(self.parameters)


class Conversation(models.Model):
    """One member's chat with the local models; only its member ever sees it."""

    class TitleSource(models.TextChoices):
        QUESTION = "question", "The first question"
        MODEL = "model", "Made by the model"
        MEMBER = "member", "Named by the member"

    member = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=80)
    # The model names a conversation once, after its first answer, unless the member already has.
    title_source = models.CharField(
        max_length=10, choices=TitleSource.choices, default=TitleSource.QUESTION
    )
    # Deleted conversations can be brought back for a few minutes, then they are gone for good.
    deleted_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # How this conversation is answered; None: the member's defaults as they are now.
    system_prompt = models.TextField(null=True, blank=True)  # noqa: DJ001 - "" is no prompt
    temperature = models.FloatField(null=True, blank=True)
    top_p = models.FloatField(null=True, blank=True)
    max_tokens = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)
    # The model's own note of the oldest messages, once they no longer fit its context (when
    # the member asked for one): it is sent in their place. `summary_covers` counts them, in
    # the order the model reads the conversation (answers without text left out).
    summary = models.TextField(blank=True)
    summary_covers = models.PositiveIntegerField(default=0)
    # What a spread route knows the conversation by (it keeps one model for it): set before
    # the first question is asked, when there is no id yet; "" for conversations from before.
    route_key = models.CharField(max_length=32, blank=True)
    # The placeholders its private values went out as (apps/privacy/vault.py), sealed: the same
    # value keeps its placeholder in every turn. It holds the values: never shown, never logged.
    vault_sealed = models.TextField(blank=True)

    def __str__(self) -> str:
        return self.title


class ChatMessage(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    role = models.CharField(max_length=10, choices=Role.choices)
    content = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    # For answers: which file answered and how (the model may be removed later; this stays).
    model_name = models.CharField(max_length=100, blank=True)
    model_sha256 = models.CharField(max_length=64, blank=True)
    sampling = models.JSONField(null=True, blank=True)
    # For an outside model's answers: who answered, what it cost (fees included), and the
    # request's id and payment hash, which find its egress record and its payment.
    provider = models.CharField(max_length=40, blank=True)
    cost_msat = models.BigIntegerField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    payment_hash = models.CharField(max_length=64, blank=True)
    finish_reason = models.CharField(max_length=20, blank=True)  # stop, length, cancelled, error
    # For answers: how many of the oldest messages the model did not read as they were, as
    # they no longer fit its context, and how many of those it read a note of instead.
    messages_left_out = models.PositiveIntegerField(default=0)
    messages_summarised = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:  # never the content: messages may end up in logs
        return f"{self.role} message {self.pk}"

    @property
    def context_note(self) -> str:
        """What the chat shows with an answer that did not see the whole conversation."""
        return context_note(self.messages_left_out, self.messages_summarised)


def context_note(left_out: int, summarised: int) -> str:
    if left_out <= 0:
        return ""
    oldest = f"The {left_out} oldest messages no longer fit"
    if left_out == 1:
        oldest = "The oldest message no longer fits"
    if summarised >= left_out:
        seen = "this answer saw a summary of them instead"
    elif summarised > 0:
        seen = f"this answer saw a summary of the first {summarised} and not the rest"
    else:
        seen = "this answer did not see them"
    return f"{oldest} the model's context; {seen}."


class ChatPreferences(models.Model):
    """How long a member's conversations are kept (0: until they delete them), what becomes
    of the oldest messages once a conversation outgrows the model's context, and how new
    conversations are answered."""

    class Overflow(models.TextChoices):
        LEAVE_OUT = "leave_out", "Leave out the oldest messages"
        SUMMARISE = "summarise", "Summarise them into a note"

    member = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_preferences"
    )
    retention_days = models.PositiveIntegerField(default=0)
    overflow = models.CharField(max_length=10, choices=Overflow.choices, default=Overflow.LEAVE_OUT)
    # The member's defaults for a new conversation; each conversation may change its own.
    system_prompt = models.TextField(blank=True)
    temperature = models.FloatField(default=0.7)
    top_p = models.FloatField(default=0.95)
    max_tokens = models.PositiveIntegerField(null=True, blank=True)  # None: the engine's default

    def __str__(self) -> str:
        return f"keep {self.retention_days or 'all'} days"


class ModelDownload(models.Model):
    """A model file being fetched from a URL into the models folder, and how far it got."""

    class State(models.TextChoices):
        DOWNLOADING = "downloading", "Downloading"
        FAILED = "failed", "Failed"
        DONE = "done", "Done"

    url = models.URLField(max_length=2048)
    name = models.SlugField(max_length=100)  # the model's name in the catalog once done
    expected_sha256 = models.CharField(max_length=64, blank=True)
    bytes_done = models.BigIntegerField(default=0)
    total_bytes = models.BigIntegerField(null=True, blank=True)  # until the server says
    state = models.CharField(max_length=12, choices=State.choices, default=State.DOWNLOADING)
    error = models.TextField(blank=True)
    # False once it failed for a reason a retry cannot mend (a wrong or too big file, a 4xx).
    retryable = models.BooleanField(default=True)
    # Who is fetching it now (a worker's name, or the command line); empty while queued.
    runner = models.CharField(max_length=255, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["name"],
                condition=models.Q(state__in=["downloading", "failed"]),
                name="one_open_download_per_name",
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def file_name(self) -> str:
        return f"{self.name}.gguf"

    @property
    def part_path(self) -> Path:
        # Not *.gguf, so the catalog never takes in a file still being written; the id keeps
        # a cancelled download's late writes apart from a new download of the same name.
        return Path(settings.DATA_DIR) / "models" / f"{self.name}-{self.pk}.gguf.part"

    @property
    def url_without_secrets(self) -> str:
        """The URL without user, password or query, as pages and logs may show it."""
        parts = urlsplit(self.url)
        host = parts.netloc.rpartition("@")[2]
        return f"{parts.scheme}://{host}{parts.path}"

    def detail(self, bytes_per_second: float | None = None) -> str:
        """One line on where the download stands, as the page and the command show it."""
        if self.state == self.State.FAILED:
            return self.error
        if self.state == self.State.DONE:
            return f"In the catalog as {self.name}."
        done = filesizeformat(self.bytes_done)
        if self.total_bytes:
            percent = 100 * self.bytes_done // self.total_bytes
            line = f"{done} of {filesizeformat(self.total_bytes)} ({percent}%)"
        else:
            line = f"{done} so far"
        return f"{line}, {filesizeformat(bytes_per_second)}/s" if bytes_per_second else line
