from django.urls import path
from django.views.generic import RedirectView

from . import views

app_name = "annotation"
urlpatterns = [
    path("", RedirectView.as_view(pattern_name="annotation:index"), name="home"),
    path("annotate/", views.index, name="index"),
    path("annotate/<int:study_id>/", views.vote_page, name="vote"),
]
