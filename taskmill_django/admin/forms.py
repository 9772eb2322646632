"""Small forms of the admin's actions and control pages. They only parse input; the views
hand the cleaned values to core functions, whose own validation errors are shown as messages."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.admin import helpers

from .. import registry
from ..enums import MAX_PRIORITY, MIN_PRIORITY, Priority
from ..policy.ratelimit import RateLimit


class ChangePriorityForm(forms.Form):
    """The intermediate page of the "change priority" action."""

    _selected_action = forms.CharField(widget=forms.MultipleHiddenInput)
    tier = forms.TypedChoiceField(
        label="Named tier",
        coerce=int,
        required=False,
        empty_value=None,
        choices=[("", "— or type a number below —")]
        + [(p.value, f"{p.label} ({p.value})") for p in Priority],
    )
    priority = forms.IntegerField(
        label="Priority",
        required=False,
        min_value=MIN_PRIORITY,
        max_value=MAX_PRIORITY,
        help_text="0 runs first, 255 last.",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        value = data.get("priority")
        if value is None:
            value = data.get("tier")
        if value is None and not self.errors:
            raise forms.ValidationError("Choose a tier or type a priority between 0 and 255.")
        data["value"] = value
        return data


class PruneForm(forms.Form):
    MODE_AGE = "age"
    MODE_COUNT = "count"

    mode = forms.ChoiceField(
        choices=[
            (MODE_AGE, "Delete rows finished more than N days ago"),
            (MODE_COUNT, "Keep only the newest N rows"),
        ],
        widget=forms.RadioSelect,
        initial=MODE_AGE,
    )
    amount = forms.FloatField(label="N", min_value=0)
    domain = forms.ChoiceField(required=False, label="Only domain")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _choice_field(self, "domain").choices = [("", "all domains")] + [
            (d.name, d.name) for d in registry.all_domains()
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        amount = data.get("amount")
        if data.get("mode") == self.MODE_COUNT and amount is not None and amount != int(amount):
            self.add_error("amount", "Keep a whole number of rows.")
        return data


class MaxConcurrencyForm(forms.Form):
    limit = forms.IntegerField(
        required=False, min_value=1, help_text="Empty = no cluster-wide cap."
    )


class DomainForm(forms.Form):
    domain = forms.ChoiceField()
    limit = forms.IntegerField(required=False, min_value=1)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _choice_field(self, "domain").choices = [(d.name, d.name) for d in registry.all_domains()]


class GroupForm(forms.Form):
    group = forms.CharField(max_length=128)


class GroupPauseForm(GroupForm):
    until = forms.DateTimeField(
        required=False,
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="Optional: the group resumes by itself at this time.",
    )


class GroupLimitForm(GroupForm):
    limit = forms.IntegerField(required=False, min_value=1, help_text="Empty removes the cap.")


class GroupWeightForm(GroupForm):
    weight = forms.FloatField(required=False, min_value=0.001, help_text="Empty removes it.")
    minimum_slots = forms.IntegerField(required=False, min_value=0)


class RateLimitForm(forms.Form):
    PER_SECOND = "second"
    PER_MINUTE = "minute"

    rate = forms.FloatField(required=False, min_value=0.0001, help_text="Empty removes it.")
    per = forms.ChoiceField(
        choices=[(PER_SECOND, "per second"), (PER_MINUTE, "per minute")],
        initial=PER_SECOND,
        required=False,
    )
    burst = forms.FloatField(required=False, min_value=1)

    def limit(self) -> RateLimit | None:
        rate = self.cleaned_data.get("rate")
        if rate is None:
            return None
        if self.cleaned_data.get("per") == self.PER_MINUTE:
            limit = RateLimit.per_minute(rate)
        else:
            limit = RateLimit.per_second(rate)
        burst = self.cleaned_data.get("burst")
        return limit.with_burst(burst) if burst else limit


class TypeRateLimitForm(RateLimitForm):
    task_type = forms.ChoiceField()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _choice_field(self, "task_type").choices = [
            (t.task_type, t.task_type) for t in registry.all_tasks()
        ]


class GroupRateLimitForm(RateLimitForm):
    group = forms.CharField(max_length=128)


def selected_ids(request: Any) -> list[str]:
    return request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)


def _choice_field(form: forms.Form, name: str) -> forms.ChoiceField:
    """A declared ChoiceField of ``form``, whose choices are filled per request."""
    field = form.fields[name]
    if not isinstance(field, forms.ChoiceField):
        raise TypeError(f"{name} is not a ChoiceField")
    return field
