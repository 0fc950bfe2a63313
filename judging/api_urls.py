from rest_framework.routers import SimpleRouter

from . import api

router = SimpleRouter()
router.register("judge-prompts", api.JudgePromptViewSet)
router.register("judge-runs", api.JudgeRunViewSet)

urlpatterns = router.urls
