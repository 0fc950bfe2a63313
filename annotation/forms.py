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
    # Not required: a post without them (an older form, a script) gets the defaults.
    sampling = forms.ChoiceField(
        choices=Study.Sampling.choices,
        initial=Study.Sampling.UNIFORM,
        required=False,
        help_text="Active: once every pair has a vote, the least settled model pairs come first",
    )
    quota = forms.IntegerField(
        min_value=1, required=False, help_text="Most votes one annotator may give (blank: none)"
    )
    gold_rate = forms.FloatField(
        min_value=0,
        max_value=1,
        initial=0,
        required=False,
        help_text="Share of pairs given as gold checks while an annotator has some left",
    )
    open_now = forms.BooleanField(
        required=False, initial=True, label="Open it now (flags self-identifying answers)"
    )

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if Study.objects.filter(name=name).exists():
            raise forms.ValidationError(f"a study named {name!r} already exists")
        return name
