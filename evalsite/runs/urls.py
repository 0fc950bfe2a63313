from django.urls import path

from . import views

urlpatterns = [
    path(
        "runs/<slug:kind>/<int:pk>/progress/",
        views.RunProgressApi.as_view(),
        name="run-progress",
    ),
]
