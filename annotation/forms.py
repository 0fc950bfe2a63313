from django import forms

from .models import Study


class StudyCreateForm(forms.Form):
    """What the "open a study comparing these runs…" admin action asks for."""

    name = forms.CharField(max_length=200, help_text="Admin-only; annotators never see it")
    title = forms.CharField(
        max_length=200,
        required=False,
        help_text="Shown to annotators; must not name a model (blank: “Study 12”, its id)",
    )
    votes_per_comparison = forms.IntegerField(
        min_value=1, initial=3, label="Votes per comparison (K)"
    )
    instructions = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 5, "cols": 80}),
        required=False,
        help_text="Shown to annotators above every pair",
    )
    open_now = forms.BooleanField(
        required=False, initial=True, label="Open it now (flags self-identifying answers)"
    )

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if Study.objects.filter(name=name).exists():
            raise forms.ValidationError(f"a study named {name!r} already exists")
        return name
